"""The state directory: refused at start-up when it cannot take records, failures later reported
(in the job, on /metrics, health NOT_SERVING), unreadable records moved aside, and ids that
never replace stored records."""
import os
import shutil
import subprocess

import pytest

from conftest import BIN, Server, metric


def job_record(job_id, kind="score", state=3):
    """A Job message by hand: id (1), kind (2), state (4)."""
    def field(number, data):
        return bytes([number << 3 | 2, len(data)]) + data
    return field(1, job_id.encode()) + field(2, kind.encode()) + bytes([4 << 3, state])


@pytest.mark.parametrize("kind", ["regular file", "missing parent"])
def test_a_state_dir_that_cannot_take_records_stops_the_server(model_root, tmp_path, kind):
    if kind == "regular file":
        state = tmp_path / "state"
        state.write_text("not a directory")
    else:
        state = tmp_path / "missing" / "state"
    out = subprocess.run([os.path.join(BIN, "superweightd"), "--listen=127.0.0.1:0",
                          f"--model_root={model_root}", f"--state_dir={state}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--state_dir" in out.stderr and "cannot store job records" in out.stderr


def test_ids_never_replace_stored_records_and_unreadable_ones_are_moved_aside(model_root, tmp_path):
    jobs = tmp_path / "state" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "job-18446744073709551614.pb").write_bytes(job_record("job-18446744073709551614"))
    (jobs / "job-000001.pb").write_bytes(job_record("job-000001"))
    (jobs / "job-000777.pb").write_bytes(b"\xff\xfe garbage")
    (jobs / "job-000778.pb").write_bytes(job_record("job-000002"))  # id and name disagree
    token = tmp_path / "token"
    token.write_text("t")
    s = Server(model_root, tmp_path / "state", token).start()
    try:
        assert sorted(os.listdir(jobs / "unreadable")) == ["job-000777.pb", "job-000778.pb"]
        assert metric(s, "superweight_unreadable_jobs_total") == 2
        ids = [s.call("score", "--model=tinystories656k", f"--text=Run {i}.")["job_id"]
               for i in range(3)]
        assert len(set(ids)) == 3
        assert not {"job-000001", "job-18446744073709551614"} & set(ids)
        stored = {j["id"]: j for j in s.call("jobs")["jobs"]}
        assert "job-000001" in stored and "job-18446744073709551614" in stored
        assert all(stored[i]["state"] == "SUCCEEDED" for i in ids)
    finally:
        s.stop()


def test_records_that_cannot_be_stored_later_are_reported(model_root, tmp_path):
    token = tmp_path / "token"
    token.write_text("t")
    s = Server(model_root, tmp_path / "state", token).start()
    try:
        assert s.client("health", token=False).stdout.strip() == "SERVING"
        # The jobs directory replaced by a file: every record written from now on fails.
        shutil.rmtree(tmp_path / "state" / "jobs")
        (tmp_path / "state" / "jobs").write_text("in the way")
        r = s.call("score", "--model=tinystories656k", "--text=Lost on restart.")
        job = {j["id"]: j for j in s.call("jobs")["jobs"]}[r["job_id"]]
        assert "cannot store the job record" in job["storage_error"]
        assert metric(s, "superweight_job_store_failures_total") >= 1
        health = s.client("health", token=False, check=False)
        assert health.returncode == 1 and health.stdout.strip() == "NOT_SERVING"
    finally:
        s.stop()
