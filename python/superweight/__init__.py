"""superweight: the Python client of the superweight service.

    from superweight import Client
    with Client("localhost:50051", token=open("token").read().strip()) as sw:
        result = sw.check(model="exports/q4.gguf", reference="SmolLM2-135M-Instruct.Q4_1.gguf")
        assert result.passed, result.failures
"""
from superweight._version import __version__
from superweight.client import Client, Job, Result, SuperweightError

__all__ = ["Client", "Job", "Result", "SuperweightError", "__version__"]
