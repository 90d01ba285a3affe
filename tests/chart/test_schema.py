"""values.schema.json: helm refuses bad values before rendering anything."""
import json
import subprocess

import jsonschema
import pytest
import yaml

from conftest import CHART, KUBE_VERSION

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def test_schema_is_draft_07():
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_default_and_full_values_pass_the_schema():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    defaults["models"]["existingClaim"] = "models"
    jsonschema.Draft7Validator(SCHEMA).validate(defaults)
    full = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    jsonschema.Draft7Validator(SCHEMA).validate(full)


def test_missing_models_claim_is_refused(render_error):
    err = render_error({"models.existingClaim": ...})
    assert "existingClaim" in err
    assert "existingClaim" in render_error({"models.existingClaim": "null"})


def test_lint_of_bare_defaults_asks_for_the_models_claim(helm):
    p = subprocess.run([helm, "lint", str(CHART), "--kube-version", KUBE_VERSION],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "existingClaim" in p.stdout + p.stderr


@pytest.mark.parametrize("sets,where", [
    (["replicaCount=three"], "replicaCount"),
    (["replicaCount=1.5"], "replicaCount"),
    (["replicaCount=-1"], "replicaCount"),
    (["replicas=2"], "replicas"),  # a typo of replicaCount: unknown keys are refused
    (["models.existingClaim=Not_A_Name"], "existingClaim"),
    (["image.pullPolicy=Sometimes"], "pullPolicy"),
    (["image.digest=latest"], "digest"),
    (["securityContext.readOnlyRootFilesystem=false"], "readOnlyRootFilesystem"),
    (["securityContext.runAsNonRoot=false"], "runAsNonRoot"),
    (["securityContext.allowPrivilegeEscalation=true"], "allowPrivilegeEscalation"),
    (["securityContext.privileged=true"], "privileged"),
    (["securityContext.capabilities.add[0]=SYS_ADMIN"], "add"),
    (["podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
    (["service.grpcPort=70000"], "grpcPort"),
    (["service.type=ExternalName"], "type"),
    (["server.maxQueuedJobs=0"], "maxQueuedJobs"),
    (["server.jobLeaseSeconds=soon"], "jobLeaseSeconds"),
    (["server.extraArgs[0]=rm -rf"], "extraArgs"),
    (["ompNumThreads=0"], "ompNumThreads"),
    (["resources.limits.cpu=two"], "cpu"),
    (["resources.limits.memory=8 GB"], "memory"),
    (["probes.startup.failureThreshold=0"], "failureThreshold"),
    (["autoscaling.enabled=yes"], "enabled"),
    (["autoscaling.metric.type=Object"], "type"),
    (["autoscaling.metric.name="], "name"),
    (["autoscaling.maxReplicas=0"], "maxReplicas"),
    (["jobStore.existingSecret=Bad Secret"], "existingSecret"),
    (["auth.key="], "key"),
    (["exports.mountPath=/models"], "mountPath"),
    (["exports.mountPath=relative"], "mountPath"),
    (["metrics.serviceMonitor.interval=often"], "interval"),
    (["podDisruptionBudget.minAvailable=most"], "minAvailable"),
    (["extraVolumes[0].name=models"], "name"),
])
def test_schema_refuses(render_error, sets, where):
    err = render_error(sets=sets)
    assert "schema" in err, err
    assert where in err, err


def test_schema_accepts_reasonable_overrides(render):
    render(sets=["replicaCount=0", "image.tag=2", "ompNumThreads=8", "resources.limits.cpu=0.5",
                 "podDisruptionBudget.maxUnavailable=50%", "exports.mountPath=/data/exports",
                 "global.foo=bar"])
