"""The chart's manifests as helm template renders them, value by value."""
import pytest

from conftest import FULLNAME

STORE = {"jobStore.existingSecret": "pg"}


def test_default_renders_the_core_objects_only(render):
    r = render()
    assert r.kinds() == ["Deployment", "Pod", "PodDisruptionBudget", "Service", "ServiceAccount"]
    assert r.deployment["spec"]["replicas"] == 1
    test_pod = r.get("Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_security_context(render):
    r = render()
    pod = r.pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    c = r.container["securityContext"]
    assert c["runAsNonRoot"] is True
    assert c["runAsUser"] == 10001
    assert c["readOnlyRootFilesystem"] is True
    assert c["allowPrivilegeEscalation"] is False
    assert c["capabilities"] == {"drop": ["ALL"]}
    assert c["seccompProfile"] == {"type": "RuntimeDefault"}
    assert r.pod_spec["automountServiceAccountToken"] is False
    assert r.get("ServiceAccount")["automountServiceAccountToken"] is False


def test_probes_are_grpc_on_50051(render):
    c = render().container
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": 50051}, probe
        assert not {"httpGet", "exec", "tcpSocket"} & c[probe].keys(), probe
    startup = c["startupProbe"]
    # Opening models can be slow: minutes before liveness takes over.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert c["readinessProbe"]["failureThreshold"] >= 1


def test_probe_timing_values(render):
    c = render({"probes.startup.failureThreshold": 120, "probes.liveness.periodSeconds": 45}).container
    assert c["startupProbe"]["failureThreshold"] == 120
    assert c["livenessProbe"]["periodSeconds"] == 45
    assert c["livenessProbe"]["grpc"] == {"port": 50051}


def test_ports_and_service(render):
    r = render()
    ports = {p["name"]: p["containerPort"] for p in r.container["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}
    svc = r.get("Service", FULLNAME)
    by_name = {p["name"]: p for p in svc["spec"]["ports"]}
    assert by_name["grpc"]["port"] == 50051 and by_name["grpc"]["targetPort"] == "grpc"
    assert by_name["metrics"]["port"] == 9090 and by_name["metrics"]["targetPort"] == "metrics"
    pod_labels = r.deployment["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert r.deployment["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


def test_service_ports_configurable(render):
    svc = render({"service.grpcPort": 443, "service.metricsPort": 9100}).get("Service")
    by_name = {p["name"]: p for p in svc["spec"]["ports"]}
    assert by_name["grpc"]["port"] == 443 and by_name["grpc"]["targetPort"] == "grpc"
    assert by_name["metrics"]["port"] == 9100


def test_helm_test_pod_is_not_selected_by_the_service(render):
    r = render()
    selector = r.get("Service")["spec"]["selector"]
    test_pod = r.get("Pod")
    assert not selector.items() <= test_pod["metadata"]["labels"].items()
    cmd = test_pod["spec"]["containers"][0]["command"]
    assert cmd[0] == "superweight" and cmd[-1] == "health"
    assert f"--server={FULLNAME}:50051" in cmd
    assert test_pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert not render({"tests.enabled": "false"}).has("Pod")


def test_models_mounted_read_only_from_the_existing_claim(render):
    r = render({"models.existingClaim": "my-models"})
    vol = r.volumes()["models"]
    assert vol["persistentVolumeClaim"] == {"claimName": "my-models", "readOnly": True}
    mount = r.mounts()["models"]
    assert mount["mountPath"] == "/models" and mount["readOnly"] is True
    assert "subPath" not in mount
    assert render({"models.subPath": "llm"}).mounts()["models"]["subPath"] == "llm"


def test_writable_paths_are_empty_dirs(render):
    r = render()
    mounts, vols = r.mounts(), r.volumes()
    assert mounts["state"]["mountPath"] == "/var/lib/superweight"
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert vols["state"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert "emptyDir" in vols["tmp"]
    assert render({"state.sizeLimit": "null"}).volumes()["state"] == {"name": "state", "emptyDir": {}}
    # Nothing else is writable: every other mount is read-only.
    for name, m in mounts.items():
        if name not in ("state", "tmp"):
            assert m.get("readOnly") is True, name


def test_no_args_by_default(render):
    r = render()
    assert r.args() == []
    assert "SUPERWEIGHT_JOB_STORE" not in r.env()
    assert "auth-token" not in r.volumes()


def test_job_store_url_comes_from_the_secret(render):
    r = render({"jobStore.existingSecret": "pg", "jobStore.key": "database-url"})
    env = r.env()["SUPERWEIGHT_JOB_STORE"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "database-url"}
    assert "value" not in env
    assert not any("job_store" in a or "postgresql" in a for a in r.args())


def test_token_mounted_from_the_secret(render):
    r = render({"auth.existingSecret": "tok", "auth.key": "bearer"})
    vol = r.volumes()["auth-token"]["secret"]
    assert vol["secretName"] == "tok"
    assert vol["items"] == [{"key": "bearer", "path": "token"}]
    mount = r.mounts()["auth-token"]
    assert mount["readOnly"] is True
    assert f"--token_file={mount['mountPath']}/token" in r.args()
    assert not any(e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "tok"
                   for e in r.env().values())


def test_server_flags(render):
    r = render({"server.maxQueuedJobs": 64, "server.memoryBudgetMb": 30000,
                "server.jobLeaseSeconds": 60, "server.jobMaxAttempts": 5,
                "server.extraArgs[0]": "--max_tokens=2048"})
    assert r.args() == ["--max_queued_jobs=64", "--memory_budget_mb=30000",
                        "--job_lease_seconds=60", "--job_max_attempts=5", "--max_tokens=2048"]


def test_large_memory_budget_is_not_mangled(render):
    # Values files give numbers as floats: 1e6 must stay an integer flag.
    r = render(files=[], sets=["server.memoryBudgetMb=1000000"])
    assert "--memory_budget_mb=1000000" in r.args()


@pytest.mark.parametrize("cpu,threads", [("2", "2"), ("4", "4"), ("500m", "1"), ("2500m", "3"),
                                         ("1.5", "2"), ("16", "16")])
def test_omp_threads_from_the_cpu_limit(render, cpu, threads):
    r = render(set_strings=[f"resources.limits.cpu={cpu}"])
    assert r.env()["OMP_NUM_THREADS"] == {"name": "OMP_NUM_THREADS", "value": threads}


def test_omp_threads_from_an_integer_cpu_limit(render):
    assert render({"resources.limits.cpu": 3}).env()["OMP_NUM_THREADS"]["value"] == "3"


def test_omp_threads_override(render):
    assert render({"ompNumThreads": 6}).env()["OMP_NUM_THREADS"]["value"] == "6"


def test_omp_threads_without_a_cpu_limit_use_the_downward_api(render):
    env = render({"resources.limits.cpu": "null"}).env()["OMP_NUM_THREADS"]
    ref = env["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu" and ref["containerName"] == "superweightd"


def test_resources(render):
    res = render({"resources.limits.memory": "32Gi"}).container["resources"]
    assert res["limits"] == {"cpu": "2", "memory": "32Gi"}
    assert res["requests"]["cpu"] == "2"


def test_one_replica_with_the_file_store(render):
    assert render({"replicaCount": 1}).deployment["spec"]["replicas"] == 1


def test_replicas_without_a_job_store_fail(render_error):
    err = render_error({"replicaCount": 3})
    assert "replicaCount is 3" in err and "jobStore.existingSecret" in err
    assert "PostgreSQL" in err


def test_replicas_with_a_job_store(render):
    assert render({"replicaCount": 3, **STORE}).deployment["spec"]["replicas"] == 3


def test_image(render):
    assert render().container["image"] == "superweight:latest"
    assert render({"image.repository": "reg.example/sw", "image.tag": "1.2.3"}).container[
        "image"] == "reg.example/sw:1.2.3"
    digest = "sha256:" + "ab" * 32
    assert render({"image.tag": "1.2.3", "image.digest": digest}).container[
        "image"] == "superweight@" + digest


def test_pdb_default_allows_draining_one(render):
    pdb = render().get("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == render().deployment["spec"]["selector"][
        "matchLabels"]


def test_pdb_min_available_wins(render):
    pdb = render({"podDisruptionBudget.minAvailable": 2}).get("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]
    pdb = render({"podDisruptionBudget.minAvailable": "50%", "podDisruptionBudget.maxUnavailable":
                  "null"}).get("PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": "50%", "selector": pdb["spec"]["selector"]}


def test_pdb_with_neither_fails(render_error):
    assert "set podDisruptionBudget.minAvailable or" in render_error(
        {"podDisruptionBudget.maxUnavailable": "null"})


def test_pdb_off(render):
    assert not render({"podDisruptionBudget.enabled": "false"}).has("PodDisruptionBudget")


def test_service_monitor_only_when_enabled(render):
    assert not render().has("ServiceMonitor")
    r = render({"metrics.serviceMonitor.enabled": "true",
                "metrics.serviceMonitor.labels.release": "kps",
                "metrics.serviceMonitor.interval": "15s",
                "headlessService.enabled": "true"})
    sm = r.get("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kps"
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics" and ep["interval"] == "15s"
    # Selects the main Service, not the headless one (one scrape per pod).
    sel = sm["spec"]["selector"]["matchLabels"]
    assert sel.items() <= r.get("Service", FULLNAME)["metadata"]["labels"].items()
    assert not sel.items() <= r.get("Service", FULLNAME + "-headless")["metadata"]["labels"].items()


def test_headless_service(render):
    assert len(render().all("Service")) == 1
    svc = render({"headlessService.enabled": "true"}).get("Service", FULLNAME + "-headless")
    assert svc["spec"]["clusterIP"] == "None"
    assert [p["name"] for p in svc["spec"]["ports"]] == ["grpc"]


def test_hpa_only_when_enabled(render):
    assert not render(STORE).has("HorizontalPodAutoscaler")


def test_hpa_on_queue_depth(render):
    r = render({"autoscaling.enabled": "true", "autoscaling.maxReplicas": 6, **STORE})
    hpa = r.get("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 6)
    (m,) = hpa["spec"]["metrics"]
    assert m["type"] == "External"
    assert m["external"]["metric"] == {"name": "superweight_store_jobs_queued"}
    assert m["external"]["target"] == {"type": "AverageValue", "averageValue": "2"}
    # The HPA owns the replica count.
    assert "replicas" not in r.deployment["spec"]


def test_hpa_metric_configurable(render):
    hpa = render({"autoscaling.enabled": "true", "autoscaling.metric.type": "Pods",
                  "autoscaling.metric.name": "superweight_queue_per_pod",
                  "autoscaling.metric.selector.kind": "ablate",
                  "autoscaling.metric.targetAverageValue": "500m", **STORE}).get(
        "HorizontalPodAutoscaler")
    (m,) = hpa["spec"]["metrics"]
    assert m["type"] == "Pods"
    assert m["pods"]["metric"] == {"name": "superweight_queue_per_pod",
                                   "selector": {"matchLabels": {"kind": "ablate"}}}
    assert m["pods"]["target"] == {"type": "AverageValue", "averageValue": "500m"}


def test_hpa_without_a_job_store_fails(render_error):
    assert "jobStore.existingSecret" in render_error({"autoscaling.enabled": "true"})


def test_hpa_min_above_max_fails(render_error):
    assert "minReplicas" in render_error({"autoscaling.enabled": "true", **STORE,
                                          "autoscaling.minReplicas": 5,
                                          "autoscaling.maxReplicas": 2})


def test_exports_off_by_default(render):
    r = render()
    assert "exports" not in r.volumes()
    assert not any(a.startswith("--export_root") for a in r.args())


def test_exports_in_an_empty_dir(render):
    r = render({"exports.enabled": "true"})
    assert r.volumes()["exports"]["emptyDir"] == {"sizeLimit": "20Gi"}
    assert r.mounts()["exports"]["mountPath"] == "/exports"
    assert "--export_root=/exports" in r.args()


def test_exports_on_a_claim_per_pod(render):
    r = render({"exports.enabled": "true", "exports.existingClaim": "exp", "replicaCount": 2,
                **STORE})
    assert r.volumes()["exports"]["persistentVolumeClaim"] == {"claimName": "exp"}
    assert r.mounts()["exports"]["subPathExpr"] == "$(POD_NAME)"
    assert r.env()["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert r.deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def test_exports_on_a_shared_directory(render, render_error):
    values = {"exports.enabled": "true", "exports.existingClaim": "exp",
              "exports.perPodSubdirectory": "false"}
    r = render(values)
    assert "subPathExpr" not in r.mounts()["exports"]
    # The new pod could not lock the export root while the old one runs.
    assert r.deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "perPodSubdirectory" in render_error({**values, "replicaCount": 2, **STORE})


def test_extra_env_volumes_and_scheduling(render):
    r = render(sets=["extraEnv[0].name=FOO", "extraEnv[0].value=bar",
                     "extraVolumes[0].name=extra", "extraVolumes[0].emptyDir.medium=Memory",
                     "extraVolumeMounts[0].name=extra", "extraVolumeMounts[0].mountPath=/x",
                     "nodeSelector.disk=ssd", "tolerations[0].key=k",
                     "tolerations[0].operator=Exists", "priorityClassName=high"])
    assert r.env()["FOO"]["value"] == "bar"
    assert r.volumes()["extra"]["emptyDir"] == {"medium": "Memory"}
    assert r.mounts()["extra"]["mountPath"] == "/x"
    assert r.pod_spec["nodeSelector"] == {"disk": "ssd"}
    assert r.pod_spec["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert r.pod_spec["priorityClassName"] == "high"


def test_full_values_file_turns_everything_on(render):
    from conftest import CHART
    r = render(files=[CHART / "ci" / "full-values.yaml"])
    assert set(r.kinds()) == {"Deployment", "HorizontalPodAutoscaler", "Pod",
                              "PodDisruptionBudget", "Service", "ServiceAccount",
                              "ServiceMonitor"}
    assert len(r.all("Service")) == 2
    assert "SUPERWEIGHT_JOB_STORE" in r.env() and "auth-token" in r.volumes()
    assert r.env()["OMP_NUM_THREADS"]["value"] == "4"  # 3500m
    assert "replicas" not in r.deployment["spec"]  # the HPA's
