"""Variants of the chart's manifests against Kubernetes' own schemas (kubernetes-validate,
strict), for the chart's oldest Kubernetes and the newest the package knows."""
import pytest

from conftest import CHART
from k8s_validate import validate_documents

VERSIONS = ["1.27.0", "latest"]
STORE = {"jobStore.existingSecret": "pg"}

VARIANTS = {
    "defaults": {},
    "no cpu limit": {"resources.limits.cpu": "null", "resources.requests.cpu": "null"},
    "token and store": {"auth.existingSecret": "tok", "replicaCount": 2, **STORE},
    "exports emptyDir": {"exports.enabled": "true", "exports.sizeLimit": "null"},
    "exports per pod": {"exports.enabled": "true", "exports.existingClaim": "exp", **STORE,
                        "replicaCount": 2},
    "exports shared": {"exports.enabled": "true", "exports.existingClaim": "exp",
                       "exports.perPodSubdirectory": "false"},
    "hpa pods metric": {"autoscaling.enabled": "true", "autoscaling.metric.type": "Pods",
                        "autoscaling.behavior.scaleDown.stabilizationWindowSeconds": 300,
                        **STORE},
    "pdb minAvailable": {"podDisruptionBudget.minAvailable": "50%",
                         "podDisruptionBudget.maxUnavailable": "null"},
    "no service account": {"serviceAccount.create": "false"},
    "headless and monitor": {"headlessService.enabled": "true",
                             "metrics.serviceMonitor.enabled": "true"},
}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_is_valid_kubernetes(render, name):
    docs = render(VARIANTS[name]).docs
    out = []
    errors, validated, _ = validate_documents(docs, VERSIONS, out.append)
    assert not errors
    assert validated == len([d for d in docs if d["kind"] != "ServiceMonitor"]) * len(VERSIONS)


def test_full_values_are_valid_kubernetes(render):
    out = []
    docs = render(files=[CHART / "ci" / "full-values.yaml"]).docs
    errors, _, skipped = validate_documents(docs, VERSIONS, out.append)
    assert not errors
    assert skipped == 1 and "ServiceMonitor" in out[0]


def test_the_validator_catches_a_broken_manifest(render):
    docs = render().docs
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["readonly"] = True
    errors, _, _ = validate_documents([deployment], ["1.27.0"], lambda _: None)
    assert len(errors) == 1 and "Deployment" in errors[0]
    errors, _, _ = validate_documents([{"apiVersion": "example.com/v1", "kind": "Thing",
                                        "metadata": {"name": "x"}}], ["1.27.0"], lambda _: None)
    assert errors and "no schema" in errors[0]
