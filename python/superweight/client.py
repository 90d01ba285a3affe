"""A thin typed layer over the generated stub: one method per job, results with the proto's
fields, a Job handle for asynchronous submits, and one exception type for every refusal."""
from __future__ import annotations

from typing import Any, Iterator, List, Mapping, Optional, Sequence, Union

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from superweight.v1 import superweight_pb2 as pb
from superweight.v1 import superweight_pb2_grpc as pb_grpc

# (layer, row, col) or (layer, row, col, expert), or a dict of Coordinate's fields.
CoordinateLike = Union[Sequence[int], Mapping[str, int]]

_DONE = {pb.Job.SUCCEEDED, pb.Job.FAILED, pb.Job.CANCELLED}


class SuperweightError(Exception):
    """A refused or failed call, or a job that did not succeed: `code` is the gRPC status code
    (grpc.StatusCode), `message` the server's explanation, `job_id` the job's where one ran."""

    def __init__(self, code: grpc.StatusCode, message: str, job_id: str = ""):
        super().__init__(f"{code.name}: {message}" + (f" (job {job_id})" if job_id else ""))
        self.code = code
        self.message = message
        self.job_id = job_id


def _status_code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


class Result:
    """A job's result: the proto message's fields as attributes (result.passed, result.rows, ...),
    `job_id`, and to_dict() for JSON."""

    def __init__(self, message: Message, job_id: str = ""):
        self._message = message
        self.job_id = job_id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy and pickle probe before _message exists
            raise AttributeError(name)
        return getattr(self._message, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | {f.name for f in self._message.DESCRIPTOR.fields})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and self._message == other._message

    @property
    def message(self) -> Message:
        """The proto message itself."""
        return self._message

    def to_dict(self) -> dict:
        """The fields as JSON would carry them (a false verdict and zeros included; 64-bit
        integers as strings, as proto3's JSON mapping writes them)."""
        return json_format.MessageToDict(self._message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def __repr__(self) -> str:
        return f"{type(self._message).__name__}({self.to_dict()})"


class Job:
    """A submitted job: its latest snapshot (`state`, `progress`, ...), and wait(), watch(),
    cancel()."""

    def __init__(self, client: "Client", snapshot: pb.Job):
        self._client = client
        self.snapshot = snapshot

    @property
    def id(self) -> str:
        return self.snapshot.id

    @property
    def state(self) -> str:
        """QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED."""
        return pb.Job.State.Name(self.snapshot.state)

    @property
    def progress(self) -> float:
        return self.snapshot.progress

    @property
    def done(self) -> bool:
        return self.snapshot.state in _DONE

    def refresh(self) -> "Job":
        self.snapshot = self._client._call("GetJob", pb.GetJobRequest(job_id=self.id.encode()))
        return self

    def watch(self, timeout: Optional[float] = None) -> Iterator["Job"]:
        """Yields this job at every change of state or progress until it ends."""
        stream = self._client._stream("WatchJob", pb.WatchJobRequest(job_id=self.id.encode()),
                                      timeout)
        try:
            for snapshot in stream:
                self.snapshot = snapshot
                yield self
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise SuperweightError(
                    e.code(), f"job {self.id} still {self.state} after {timeout} s; it goes on "
                    f"running: client.job({self.id!r}).wait() waits again", self.id) from None
            raise _error(e, self.id) from None

    def wait(self, timeout: Optional[float] = None) -> Result:
        """The result once the job ends (waiting at most `timeout` seconds, if given; the job is
        not cancelled when the wait gives up); SuperweightError if it failed or was cancelled."""
        if not self.done:
            for _ in self.watch(timeout):
                pass
        return self.result()

    def result(self) -> Result:
        if self.snapshot.state == pb.Job.SUCCEEDED:
            which = self.snapshot.WhichOneof("result")
            return Result(getattr(self.snapshot, which) if which else pb.Job(), self.id)
        if self.snapshot.state in _DONE:
            code = _status_code(self.snapshot.error_code or 1)  # a cancelled job: CANCELLED
            raise SuperweightError(code, self.snapshot.error_message or "the job was cancelled",
                                   self.id)
        raise SuperweightError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"job {self.id} is {self.state}", self.id)

    def cancel(self) -> "Job":
        self.snapshot = self._client._call("CancelJob",
                                           pb.CancelJobRequest(job_id=self.id.encode()))
        return self

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.snapshot.kind}, {self.state}, {self.progress:.0%})"


def _error(e: grpc.RpcError, job_id: str = "") -> SuperweightError:
    return SuperweightError(e.code(), e.details() or "", job_id)


def _coordinate(c: CoordinateLike) -> pb.Coordinate:
    if isinstance(c, Mapping):
        try:
            return pb.Coordinate(**c)
        except ValueError as e:
            raise ValueError(f"coordinate {c!r}: {e}") from None
    if not isinstance(c, Sequence) or isinstance(c, str) or len(c) not in (3, 4):
        raise ValueError(f"a coordinate is (layer, row, col) or (layer, row, col, expert): {c!r}")
    try:
        out = pb.Coordinate(layer=c[0], row=c[1], col=c[2])
        if len(c) == 4:
            out.expert = c[3]
    except (ValueError, TypeError) as e:
        raise ValueError(f"coordinate {tuple(c)!r}: {e}") from None
    return out


def _coordinates(cs: Sequence[CoordinateLike]) -> List[pb.Coordinate]:
    """A list of coordinates; one coordinate alone ((11, 507, 1229)) is taken as a list of one."""
    if isinstance(cs, Mapping) or (cs and all(isinstance(v, int) for v in cs)):
        cs = [cs]
    return [_coordinate(c) for c in cs]


class Client:
    """A connection to superweightd.

    address: HOST:PORT. token: the bearer token (the server's --token_file). ca_cert: the PEM file
    of the CA that signed the server's certificate (TLS; without it, plaintext). timeout: seconds
    each call may take; a job is waited for without a limit unless its method gets `timeout=`.

    The job methods take their request's fields (superweight.proto's names) as keywords, e.g.
    window=, max_windows=, tasks=[...], max_examples=, skip_confirmation=, threshold=,
    request_id=; bf16=True asks for bf16 precision; coordinates are (layer, row, col) or
    (layer, row, col, expert) tuples or dicts. wait=False returns the Job at once.
    """

    def __init__(self, address: str, token: Optional[str] = None, ca_cert: Optional[str] = None,
                 timeout: float = 600.0):
        if ca_cert:
            with open(ca_cert, "rb") as f:
                self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(f.read()))
        else:
            self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.SuperWeightServiceStub(self._channel)
        token = token.strip() if token else token  # as read from a file, newline and all
        if token and any(c.isspace() or not c.isprintable() for c in token):
            raise ValueError("token: spaces or control characters cannot travel in a header")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Calls ---------------------------------------------------------------------------------

    def _call(self, method: str, request: Message, timeout: Optional[float] = None):
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout,
                                               metadata=self._metadata)
        except grpc.RpcError as e:
            raise _error(e) from None

    def _stream(self, method: str, request: Message, timeout: Optional[float] = None):
        """A server stream; no deadline unless `timeout` (a job may run for hours)."""
        return getattr(self._stub, method)(request, timeout=timeout, metadata=self._metadata)

    def health(self) -> bool:
        """Whether the server is SERVING (gRPC health checking; needs no token)."""
        check = self._channel.unary_unary("/grpc.health.v1.Health/Check",
                                          request_serializer=lambda r: r,
                                          response_deserializer=lambda b: b)
        try:
            reply = check(b"", timeout=self.timeout)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return False
            raise _error(e) from None
        return reply == b"\x08\x01"  # HealthCheckResponse{status: SERVING}

    def info(self) -> Result:
        """The server's build (version, git_revision, cpu_class) and job store."""
        return Result(self._call("GetServerInfo", pb.GetServerInfoRequest()))

    def models(self) -> List[Result]:
        """The models under the server's --model_root (ModelInfo results)."""
        return [Result(m) for m in self._call("ListModels", pb.ListModelsRequest()).models]

    def job(self, job_id: str) -> Job:
        """The job of this id (job-000001), as the server has it now."""
        return Job(self, self._call("GetJob", pb.GetJobRequest(job_id=str(job_id).encode())))

    def jobs(self, model: str = "", limit: int = 0) -> List[Job]:
        """The server's jobs, most recent first (only `model`'s when given; at most `limit`,
        default 100)."""
        reply = self._call("ListJobs", pb.ListJobsRequest(model=model, limit=limit))
        return [Job(self, j) for j in reply.jobs]

    # Jobs: each takes its request's fields as keywords (the proto's names), plus bf16=True for
    # bf16 precision and coordinates as tuples; wait=False submits and returns a Job at once.

    def locate(self, model: str, *, text: Optional[str] = None,
               token_ids: Optional[Sequence[int]] = None, bf16: bool = False, wait: bool = True,
               **fields) -> Union[Result, Job]:
        """The model's super weights (LocateResult: super_weights, profile_before, summary...)."""
        return self._job("Locate", pb.LocateRequest, model, bf16, wait, fields,
                         _input(text, token_ids))

    def score(self, model: str, *, text: Optional[str] = None,
              token_ids: Optional[Sequence[int]] = None,
              zero: Sequence[CoordinateLike] = (), bf16: bool = False, wait: bool = True,
              **fields) -> Union[Result, Job]:
        """Perplexity and per-token log-probabilities (ScoreResult), with `zero`'s weights at 0."""
        if zero:
            if "edits" in fields:
                raise TypeError("Score: give zero= or edits=, not both")
            fields["edits"] = pb.EditSet(weights=[pb.WeightEdit(coordinate=c)
                                                  for c in _coordinates(zero)])
        return self._job("Score", pb.ScoreRequest, model, bf16, wait, fields,
                         _input(text, token_ids))

    def ablate(self, model: str, *, super_weights: Sequence[CoordinateLike] = (),
               bf16: bool = False, wait: bool = True, **fields) -> Union[Result, Job]:
        """The paper's ablation table (AblateResult: rows of setting and metrics)."""
        fields["super_weights"] = _coordinates(super_weights)
        return self._job("Ablate", pb.AblateRequest, model, bf16, wait, fields)

    def quantize(self, model: str, *, settings: Sequence[Mapping[str, Any]] = (),
                 super_weights: Sequence[CoordinateLike] = (), bf16: bool = False,
                 wait: bool = True, **fields) -> Union[Result, Job]:
        """Round-to-nearest quantization rows (QuantizeResult), and an export when asked.
        settings: QuantizeSetting fields per row, e.g. {"bits": 4, "block_size": 32}."""
        fields["settings"] = [pb.QuantizeSetting(**s) for s in settings]
        fields["super_weights"] = _coordinates(super_weights)
        return self._job("Quantize", pb.QuantizeRequest, model, bf16, wait, fields)

    def check(self, model: str, reference: str, *, super_weights: Sequence[CoordinateLike] = (),
              bf16: bool = False, wait: bool = True, **fields) -> Union[Result, Job]:
        """Whether quantized `model` kept the super weights of `reference` (CheckResult: passed,
        failures, super_weights, perplexity_ratio)."""
        fields["reference"] = reference
        fields["super_weights"] = _coordinates(super_weights)
        return self._job("Check", pb.CheckRequest, model, bf16, wait, fields)

    def recipe(self, model: str, file_type: str, *, super_weights: Sequence[CoordinateLike] = (),
               bf16: bool = False, wait: bool = True, **fields) -> Union[Result, Job]:
        """The llama-quantize command line that keeps the super weights of GGUF `model` through
        `file_type` ("Q4_K_M", "Q2_K"...): RecipeResult (command, tensor_type_overrides, tensors
        with each candidate type measured, and the plain and recipe files' outcomes:
        super_weights_kept, perplexity_ratio, passed)."""
        fields["file_type"] = file_type
        fields["super_weights"] = _coordinates(super_weights)
        return self._job("Recipe", pb.RecipeRequest, model, bf16, wait, fields)

    def _job(self, method: str, request_type, model: str, bf16: bool, wait: bool,
             fields: dict, job_input: Optional[pb.Input] = None) -> Union[Result, Job]:
        timeout = fields.pop("timeout", None)  # how long to wait for the job (None: no limit)
        for name, value in fields.items():
            field = request_type.DESCRIPTOR.fields_by_name.get(name)
            if field is not None and _is_repeated(field) and isinstance(value, (str, bytes)):
                raise TypeError(f"{method}: {name} takes a list, e.g. {name}=[{value!r}]")
        try:
            request = request_type(model=model, **fields)
        except (ValueError, TypeError) as e:  # a field the request does not have, a bad value
            raise TypeError(f"{method}: {e}") from None
        if job_input is not None:
            request.input.CopyFrom(job_input)
        if bf16:
            request.precision = pb.PRECISION_BF16
        # Submitted without waiting, then followed: a long job outlives any one call's deadline,
        # and giving up the wait leaves it running rather than cancelled.
        setattr(request, "async", True)  # a Python keyword: no attribute syntax
        job = self.job(self._call(method, request).job_id)
        return job.wait(timeout) if wait else job


def _is_repeated(field) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf 7; `label` before it
    return repeated if repeated is not None else field.label == field.LABEL_REPEATED


def _input(text: Optional[str], token_ids: Optional[Sequence[int]]) -> Optional[pb.Input]:
    if text is not None and token_ids is not None:
        raise ValueError("give text or token_ids, not both")
    if text is not None:
        return pb.Input(text=text)
    if token_ids is not None:
        return pb.Input(token_ids=pb.TokenIds(ids=list(token_ids)))
    return None
