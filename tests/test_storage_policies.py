"""The MinIO users of manifests/base, enforced on a loopback S3 server.

The bucket Job gives the pipeline and the predictor each a MinIO user with the
policy of the same name from ``manifests/base/policies/`` (the ConfigMap
``kubeloop-s3-policies``). Here the same files, taken from the rendered
ConfigMap, are attached to IAM users of a moto server of its own with IAM
enforcement on; every call goes over HTTP, signed with that user's keys:

- a table of S3 calls (list, read, head, write, conditional write, multipart,
  delete) per user and bucket, each either done or refused with
  AccessDenied, and a refused write leaves the object as it was;
- kubeloop's own code as each user: the pipeline registers and promotes a model,
  reads datasets and prediction logs, and may not write to data/ or logs/; the
  predictor loads a model (and a shadow) from models/ and logs its answers to
  logs/, and may neither register a model nor overwrite the model file.

Where moto and MinIO differ:
- moto authorizes HEAD on a bucket as ``s3:HeadBucket``, where MinIO and AWS ask
  for ``s3:ListBucket``; the policies grant both (MinIO accepts the first and
  ignores it), so the same files hold on either server;
- moto checks a bulk delete (DeleteObjects) against the bucket, where S3 and
  MinIO check ``s3:DeleteObject`` on each key. No consumer makes bulk deletes
  (the registry deletes one key at a time), so the table leaves them out; a
  refused one is still checked to surface as PermissionDenied.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cluster_support import render
from tests.conftest import TEST_ACCESS_KEY, TEST_SECRET_KEY, MotoServer

BUCKETS = ("models", "logs", "data")
USERS = ("kubeloop-pipeline", "kubeloop-predictor")
REGION = "us-east-1"
# Stands in for MinIO's root user, which only the bucket Job holds: it seeds objects.
ADMIN_POLICY = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:*", "iam:*"], "Resource": "*"}]}


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str


def _client(endpoint: str, keys: Keys, service: str = "s3") -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=keys.access_key_id, aws_secret_access_key=keys.secret_access_key,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1},
                                      s3={"addressing_style": "path"}))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> dict[str, Any]:
    """The rendered ConfigMap the Job mounts, and the Job itself."""
    from tests.cluster_support import copy_manifests

    objs = render(copy_manifests(tmp_path_factory.mktemp("manifests")) / "overlays" / "kind")
    (configmap,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kubeloop-s3-policies"]
    (job,) = [o for o in objs if o["kind"] == "Job" and o["metadata"]["name"] == "kubeloop-buckets"]
    return {"policies": {name: json.loads(text) for name, text in configmap["data"].items()}, "job": job}


@dataclass
class Enforced:
    server: MotoServer
    admin: Keys
    users: dict[str, Keys]

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def s3(self, who: str) -> Any:
        return _client(self.endpoint, self.admin if who == "admin" else self.users[who])


@pytest.fixture(scope="module")
def enforced(moto_factory, shipped) -> Enforced:
    """A moto server of its own: the three buckets, an admin, and one IAM user per
    shipped policy; then IAM is enforced on every request."""
    server = moto_factory()
    server.set_auth(False)
    bootstrap = Keys(TEST_ACCESS_KEY, TEST_SECRET_KEY)
    iam = _client(server.endpoint, bootstrap, "iam")

    def user(name: str, document: dict[str, Any]) -> Keys:
        iam.create_user(UserName=name)
        arn = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))["Policy"]["Arn"]
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])

    admin = user("admin", ADMIN_POLICY)
    users = {f"{name.removesuffix('.json')}": user(name.removesuffix(".json"), doc)
             for name, doc in shipped["policies"].items()}
    s3 = _client(server.endpoint, bootstrap)
    for bucket in BUCKETS:
        s3.create_bucket(Bucket=bucket)
    server.set_auth(True)
    return Enforced(server, admin, users)


# --- the shipped files are what the Job applies ---------------------------------------


def test_the_job_creates_one_user_per_shipped_policy(shipped) -> None:
    assert sorted(shipped["policies"]) == [f"{u}.json" for u in USERS]
    spec = shipped["job"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    script = container["args"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "policies")
    volume = next(v for v in spec["volumes"] if v["name"] == "policies")
    assert volume["configMap"]["name"] == "kubeloop-s3-policies" and mount["readOnly"] is True
    assert f'"{mount["mountPath"]}/$1.json"' in script
    for name in USERS:
        assert re.search(rf"^\s*user {name} ", script, re.M), f"the Job does not create {name}"
    assert 'mc admin policy create kubeloop "$1"' in script
    assert 'mc admin policy attach kubeloop "$1" --user "$2"' in script
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert env == {
        "ROOT_ACCESS_KEY_ID": "kubeloop-s3-root", "ROOT_SECRET_ACCESS_KEY": "kubeloop-s3-root",
        "PIPELINE_ACCESS_KEY_ID": "kubeloop-s3-pipeline", "PIPELINE_SECRET_ACCESS_KEY": "kubeloop-s3-pipeline",
        "PREDICTOR_ACCESS_KEY_ID": "kubeloop-s3-predictor", "PREDICTOR_SECRET_ACCESS_KEY": "kubeloop-s3-predictor",
    }



def _run_job_script(shipped, tmp_path, env: dict[str, str]):
    """The Job's script under /bin/sh, with `mc` a stand-in that records each call
    (and what arrives on stdin) and succeeds: no MinIO can run here, so this checks
    the script's own logic, the policy files' paths and where the secrets go."""
    import os
    import shutil
    import subprocess

    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no /bin/sh")
    (container,) = shipped["job"]["spec"]["template"]["spec"]["containers"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.log"
    (bindir / "mc").write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> {calls}\n'
        f'if [ "$1 $2 $3" = "admin user add" ]; then printf "stdin: %s\\n" "$(cat)" >> {calls}; fi\n'
    )
    (bindir / "mc").chmod(0o755)
    fixed = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    proc = subprocess.run([sh, "-ec", container["args"][0]], env={"PATH": f"{bindir}:{os.environ['PATH']}",
                          **fixed, **env}, capture_output=True, text=True, timeout=60)
    return proc, calls.read_text().splitlines() if calls.exists() else []


JOB_KEYS = {"ROOT_ACCESS_KEY_ID": "root-id", "ROOT_SECRET_ACCESS_KEY": "root-secret-123",
            "PIPELINE_ACCESS_KEY_ID": "pipe-id", "PIPELINE_SECRET_ACCESS_KEY": "pipe-secret-123",
            "PREDICTOR_ACCESS_KEY_ID": "pred-id", "PREDICTOR_SECRET_ACCESS_KEY": "pred-secret-123"}


def test_job_script_creates_buckets_then_each_user_with_its_policy(shipped, tmp_path) -> None:
    proc, calls = _run_job_script(shipped, tmp_path, JOB_KEYS)
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == "alias set kubeloop http://minio.kubeloop-storage.svc:9000 root-id root-secret-123"
    assert calls[1:4] == [f"mb --ignore-existing kubeloop/{b}" for b in ("models", "logs", "data")]
    assert calls[4:] == [
        "admin policy create kubeloop kubeloop-pipeline /policies/kubeloop-pipeline.json",
        "admin user add kubeloop pipe-id", "stdin: pipe-secret-123",
        "admin policy attach kubeloop kubeloop-pipeline --user pipe-id",
        "admin policy create kubeloop kubeloop-predictor /policies/kubeloop-predictor.json",
        "admin user add kubeloop pred-id", "stdin: pred-secret-123",
        "admin policy attach kubeloop kubeloop-predictor --user pred-id",
    ]
    # The mounted ConfigMap holds every file the script names.
    named = {c.rsplit("/", 1)[1] for c in calls if c.startswith("admin policy create")}
    assert named == set(shipped["policies"])


@pytest.mark.parametrize("same", [("PIPELINE", "PREDICTOR"), ("PIPELINE", "ROOT"), ("PREDICTOR", "ROOT")])
def test_job_script_refuses_two_identities_sharing_a_key(shipped, tmp_path, same) -> None:
    keys = dict(JOB_KEYS, **{f"{same[0]}_ACCESS_KEY_ID": JOB_KEYS[f"{same[1]}_ACCESS_KEY_ID"]})
    proc, calls = _run_job_script(shipped, tmp_path, keys)
    assert proc.returncode == 1
    assert "three different AWS_ACCESS_KEY_ID values" in proc.stderr
    assert not any(c.startswith("admin") for c in calls), "no user is created or changed"


def test_policies_name_only_the_three_buckets_and_allow_nothing_administrative(shipped) -> None:
    for name, doc in shipped["policies"].items():
        for statement in doc["Statement"]:
            assert statement["Effect"] == "Allow", name
            actions = statement["Action"]
            assert all(a.startswith("s3:") and "*" not in a for a in actions), (name, actions)
            assert not any(a.startswith(("s3:PutBucket", "s3:DeleteBucket", "s3:CreateBucket", "s3:PutObjectAcl"))
                           for a in actions), (name, actions)
            for resource in statement["Resource"]:
                bucket = resource.removeprefix("arn:aws:s3:::").split("/", 1)[0]
                assert bucket in BUCKETS, (name, resource)
            # MinIO refuses a policy whose statement gives an object action without an
            # object resource (bucket/*), or a bucket action without a bucket one.
            on_objects = {a in MINIO_OBJECT_ACTIONS for a in actions}
            assert len(on_objects) == 1, (name, statement["Sid"], "mixes object and bucket actions")
            objects = {"/" in r for r in statement["Resource"]}
            assert objects == on_objects, (name, statement["Sid"])


# The S3 actions MinIO's policy package (minio/pkg policy/action.go) types as
# object actions, of those a policy here may use.
MINIO_OBJECT_ACTIONS = {"s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject",
                        "s3:ListMultipartUploadParts", "s3:PutObject"}


# --- every call, as each user ----------------------------------------------------------

# What each user may do, per bucket: the contract, written out independently of the
# policy files (a looser policy fails the "refused" rows, a stricter one the rest).
READ = {"list", "get", "head"}
WRITE = {"put", "put_if_absent", "put_if_match", "multipart", "delete"}
ALLOWED = {
    ("kubeloop-pipeline", "data"): READ,
    ("kubeloop-pipeline", "logs"): READ,
    ("kubeloop-pipeline", "models"): READ | WRITE | {"abort_multipart"},
    ("kubeloop-predictor", "data"): set(),
    # Any PutObject, conditional or not, may replace a key: S3 policies cannot tell
    # a new object from an overwrite. Log parts have random names, so none is reused.
    ("kubeloop-predictor", "logs"): {"put", "put_if_absent", "put_if_match", "multipart"},
    ("kubeloop-predictor", "models"): READ,
}
OPERATIONS = sorted(READ | WRITE | {"abort_multipart"})


def _call(s3: Any, admin: Any, bucket: str, operation: str) -> None:
    """One S3 call on ``bucket``; objects it needs are seeded by the admin first."""
    key = f"policy-test/{operation}-{uuid.uuid4().hex[:8]}"
    if operation in {"get", "head", "put_if_match", "delete"}:
        etag = admin.put_object(Bucket=bucket, Key=key, Body=b"seed")["ETag"]
    if operation == "list":
        s3.list_objects_v2(Bucket=bucket, Prefix="policy-test/")
    elif operation == "get":
        s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    elif operation == "head":
        s3.head_object(Bucket=bucket, Key=key)
    elif operation == "put":
        s3.put_object(Bucket=bucket, Key=key, Body=b"new")
    elif operation == "put_if_absent":
        s3.put_object(Bucket=bucket, Key=key, Body=b"new", IfNoneMatch="*")
    elif operation == "put_if_match":
        s3.put_object(Bucket=bucket, Key=key, Body=b"new", IfMatch=etag)
    elif operation == "multipart":
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 1024)
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    elif operation == "abort_multipart":
        upload = admin.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
    elif operation == "delete":
        s3.delete_object(Bucket=bucket, Key=key)
    else:  # pragma: no cover - the table and this function must agree
        raise AssertionError(operation)


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("bucket", BUCKETS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_call_is_done_or_refused_as_the_contract_says(enforced, user, bucket, operation) -> None:
    from botocore.exceptions import ClientError

    allowed = operation in ALLOWED[(user, bucket)]
    try:
        _call(enforced.s3(user), enforced.s3("admin"), bucket, operation)
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        assert not allowed, f"{user} must be able to {operation} on {bucket}, got {code}"
        # A HEAD answer has no body to carry the code: only its status says 403.
        assert code == ("403" if operation == "head" else "AccessDenied"), code
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    else:
        assert allowed, f"{user} must not be able to {operation} on {bucket}"


@pytest.mark.parametrize("user", USERS)
def test_no_user_may_create_delete_or_list_buckets(enforced, user) -> None:
    from botocore.exceptions import ClientError

    s3 = enforced.s3(user)
    for call in (lambda: s3.create_bucket(Bucket=f"kubeloop-extra-{uuid.uuid4().hex[:6]}"),
                 lambda: s3.delete_bucket(Bucket="data"),
                 lambda: s3.list_buckets(),
                 lambda: s3.put_bucket_policy(Bucket="models", Policy=json.dumps(ADMIN_POLICY))):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert set(BUCKETS) <= {b["Name"] for b in enforced.s3("admin").list_buckets()["Buckets"]}


def test_unknown_keys_are_refused(enforced) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        _client(enforced.endpoint, Keys("AKIAKUBELOOPNOSUCHKEY", "not-a-secret-0123456789")).list_objects_v2(
            Bucket="models")
    assert info.value.response["Error"]["Code"] in {"InvalidAccessKeyId", "AccessDenied"}


def test_a_refused_write_leaves_the_model_as_it_was(enforced) -> None:
    from botocore.exceptions import ClientError

    admin, predictor = enforced.s3("admin"), enforced.s3("kubeloop-predictor")
    key = f"policy-test/{uuid.uuid4().hex[:8]}/model.joblib"
    admin.put_object(Bucket="models", Key=key, Body=b"the real model")
    for call in (lambda: predictor.put_object(Bucket="models", Key=key, Body=b"planted"),
                 lambda: predictor.delete_object(Bucket="models", Key=key)):
        with pytest.raises(ClientError):
            call()
    assert admin.get_object(Bucket="models", Key=key)["Body"].read() == b"the real model"


# --- kubeloop's own code, as each user ---------------------------------------------------


@pytest.fixture
def as_user(enforced, monkeypatch):
    """Point kubeloop's storage at the enforcing server with one user's keys."""

    def use(who: str) -> None:
        keys = enforced.admin if who == "admin" else enforced.users[who]
        monkeypatch.setenv("AWS_ENDPOINT_URL", enforced.endpoint)
        monkeypatch.setenv("AWS_REGION", REGION)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys.access_key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys.secret_access_key)

    return use


@pytest.fixture(scope="module")
def model():
    from tests.serving_support import trained

    return trained("linear", "classification")


def _registry_root() -> str:
    return f"s3://models/registry-{uuid.uuid4().hex[:8]}"


def test_pipeline_registers_and_promotes_the_predictor_may_not(as_user, model) -> None:
    from kubeloop.registry import Registry
    from kubeloop.storage import PermissionDenied
    from tests.serving_support import register

    root = _registry_root()
    as_user("kubeloop-predictor")
    with pytest.raises(PermissionDenied, match="access denied"):
        register(Registry(root), model)
    as_user("kubeloop-pipeline")
    registry = Registry(root)
    assert registry.list_versions("churn") == [], "the refused registration left nothing behind"
    assert registry.store.list() == []
    version = register(registry, model)
    assert registry.get_alias("churn", "production") == version
    # A second run, gated against the first: a new version, production moved by compare-and-swap.
    second = register(registry, model)
    assert second != version and registry.get_alias("churn", "production") == second
    assert registry.get_alias("churn", "previous") == version


def test_predictor_loads_from_models_and_logs_to_logs(as_user, model) -> None:
    import pandas as pd

    from kubeloop.registry import Registry
    from kubeloop.serving.logs import read_logs
    from kubeloop.serving.model import KubeloopModel
    from kubeloop.storage import PermissionDenied, open_store
    from tests.serving_support import register, rows_of

    root = _registry_root()
    as_user("kubeloop-pipeline")
    registry = Registry(root)
    version = register(registry, model)
    model_dir = registry.model_uri("churn", version)
    log_root = f"s3://logs/predictions-{uuid.uuid4().hex[:8]}"

    as_user("kubeloop-predictor")
    server = KubeloopModel("churn", model_dir, log_uri=log_root, shadow_uri=model_dir,
                           log_options={"flush_seconds": 0.05})
    assert server.load()
    rows = rows_of(model.test.head(5), model.features)
    answer = server.score({"instances": rows})
    assert len(answer["predictions"]) == 5
    server.close()
    # The predictor may not plant a model, nor read anyone's logs back.
    store = open_store(model_dir)
    with pytest.raises(PermissionDenied):
        store.write_bytes("model.joblib", b"planted")
    with pytest.raises(PermissionDenied):
        open_store(log_root).list()

    as_user("kubeloop-pipeline")
    logs = read_logs(log_root, "churn")
    assert isinstance(logs, pd.DataFrame)
    assert sorted(logs["role"].unique()) == ["primary", "shadow"]
    assert (logs["role"] == "primary").sum() == 5 and set(logs["version"]) == {version}
    # The model the predictor tried to replace is untouched: it still loads, hash checked.
    assert registry.load_model("churn", version) is not None


def test_predictor_keys_fetch_a_model_folder_as_kserves_storage_initializer_does(enforced, as_user, model,
                                                                                 tmp_path) -> None:
    """The storage initializer's S3 calls (kserve_storage.Storage._download_s3 in
    kserve/kserve: boto3's resource, ``bucket.objects.filter(Prefix=...)``, then
    ``bucket.download_file`` per object) with the predictor's keys."""
    import boto3
    from botocore.config import Config

    from kubeloop.registry import Registry
    from kubeloop.storage import sha256_file
    from tests.serving_support import register

    as_user("kubeloop-pipeline")
    registry = Registry(_registry_root())
    version = register(registry, model)
    _, _, rest = registry.serving_uri("churn", version).partition("s3://models/")
    keys = enforced.users["kubeloop-predictor"]
    s3 = boto3.resource("s3", endpoint_url=enforced.endpoint, region_name=REGION, config=Config(),
                        aws_access_key_id=keys.access_key_id, aws_secret_access_key=keys.secret_access_key)
    bucket = s3.Bucket("models")
    found = [o.key for o in bucket.objects.filter(Prefix=rest) if not o.key.endswith("/") and o.size]
    assert sorted(k.removeprefix(rest) for k in found) == ["kubeloop.json", "model.joblib"]
    for key in found:
        bucket.download_file(key, str(tmp_path / key.rsplit("/", 1)[1]))
    meta = json.loads((tmp_path / "kubeloop.json").read_text())
    assert sha256_file(tmp_path / "model.joblib") == meta["sha256"]


def test_pipeline_reads_data_and_logs_and_writes_neither(as_user, tmp_path) -> None:
    import pandas as pd

    from kubeloop.monitoring.stream import iter_batches
    from kubeloop.storage import PermissionDenied, local_copy, open_store

    as_user("admin")
    prefix = uuid.uuid4().hex[:8]
    data = open_store(f"s3://data/{prefix}")
    data.write_bytes("train.csv", b"a,b\n1,2\n3,4\n")
    logs = open_store(f"s3://logs/{prefix}")
    buf = io.BytesIO()
    pd.DataFrame({"a": [1.0, 2.0, 3.0]}).to_parquet(buf, index=False)
    logs.write_bytes("churn/date=2026-12-01/part-1.parquet", buf.getvalue())

    as_user("kubeloop-pipeline")
    with local_copy(f"s3://data/{prefix}/train.csv") as path:  # what ingest does
        assert path.read_bytes() == b"a,b\n1,2\n3,4\n"
    # Monitoring reads logs through pyarrow's S3 filesystem, not boto3.
    rows = sum(b.num_rows for b in iter_batches(f"s3://logs/{prefix}/churn/", ["a"]))
    assert rows == 3
    for root in (f"s3://data/{prefix}", f"s3://logs/{prefix}"):
        with pytest.raises(PermissionDenied):
            open_store(root).write_bytes("planted.csv", b"x")
        with pytest.raises(PermissionDenied):
            open_store(root).delete_prefix("")
    as_user("admin")
    assert data.list() == ["train.csv"]



# --- the loop, as each user: train, serve, monitor ----------------------------------------


def _kubeloop(args: list[str], cwd, keys: Keys, endpoint: str):
    """The installed command in a subprocess holding only ``keys``."""
    import os
    import subprocess

    from tests.helpers_cli import kubeloop_command

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "KUBELOOP_REGISTRY"}
    env.update(AWS_ACCESS_KEY_ID=keys.access_key_id, AWS_SECRET_ACCESS_KEY=keys.secret_access_key,
               AWS_REGION=REGION, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true")
    return subprocess.run(kubeloop_command() + [*args, "--s3-endpoint", endpoint], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_loop_runs_with_each_user_holding_only_its_own_keys(enforced, as_user, tmp_path) -> None:
    from kubeloop.components.monitor import monitor_step, publish
    from kubeloop.config import Config
    from kubeloop.datagen import make_churn
    from kubeloop.registry import Registry
    from kubeloop.serving.model import KubeloopModel
    from kubeloop.storage import PermissionDenied, open_store
    from tests.helpers_cli import FAST_CONFIG, MODEL, run_args
    from tests.serving_support import rows_of

    prefix = uuid.uuid4().hex[:8]
    data, fresh = f"s3://data/{prefix}/churn.csv", f"s3://data/{prefix}/fresh.csv"
    registry_uri, log_root = f"s3://models/{prefix}/registry", f"s3://logs/{prefix}/predictions"
    as_user("admin")  # whoever owns the datasets puts them in
    for uri, frame in ((data, make_churn(800, seed=0)), (fresh, make_churn(600, seed=9, drift=1.0))):
        path = tmp_path / uri.rsplit("/", 1)[1]
        frame.to_csv(path, index=False)
        open_store(f"s3://data/{prefix}").upload_file(path.name, path)
    config = tmp_path / "fast.yaml"
    config.write_text(FAST_CONFIG)

    # Training as the predictor is refused before anything is registered.
    refused = _kubeloop(run_args(data, registry_uri, config, "--work-dir", str(tmp_path / "w0")), tmp_path,
                        enforced.users["kubeloop-predictor"], enforced.endpoint)
    assert refused.returncode == 2, refused.stderr
    assert "access denied" in refused.stderr and "Traceback" not in refused.stderr
    as_user("admin")
    assert open_store(registry_uri).list() == []

    # Training as the pipeline: reads data/, registers v1 in models/ and promotes it.
    run = _kubeloop(run_args(data, registry_uri, config, "--work-dir", str(tmp_path / "w1")), tmp_path,
                    enforced.users["kubeloop-pipeline"], enforced.endpoint)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert (summary["version"], summary["promoted"]) == ("v1", True)
    for keys in enforced.users.values():
        for value in (keys.access_key_id, keys.secret_access_key):
            assert value not in run.stdout + run.stderr

    # Serving as the predictor: the model from models/, every answer logged to logs/.
    as_user("kubeloop-predictor")
    registry = Registry(registry_uri)
    server = KubeloopModel(MODEL, registry.model_uri(MODEL, registry.resolve(MODEL, "production")),
                           log_uri=log_root, log_options={"flush_seconds": 0.05})
    assert server.load()
    meta = json.loads(registry.read_bytes(MODEL, "production", "model/kubeloop.json"))
    features = [f["name"] for f in meta["features"]]
    traffic = make_churn(200, seed=5)
    for start in range(0, len(traffic), 20):
        server.score({"instances": rows_of(traffic.iloc[start:start + 20], features)})
    server.close()

    # Monitoring as the pipeline: logs/ and data/ read, the report kept in models/ only.
    as_user("kubeloop-pipeline")
    cfg = Config.from_dict({"monitoring": {"cooldown_hours": 0}})
    out = monitor_step(model_name=MODEL, registry=registry_uri, logs_uri=log_root, cfg=cfg,
                       out_dir=str(tmp_path / "report"), retrain_data_uri=fresh)
    assert out["verdict"]["n_current"] == len(traffic)
    publish(str(tmp_path / "report"), f"s3://models/{prefix}/reports/1")
    with pytest.raises(PermissionDenied):
        publish(str(tmp_path / "report"), f"s3://logs/{prefix}/reports/1")
    verdict = json.loads(open_store(f"s3://models/{prefix}/reports/1").read_bytes("verdict.json"))
    assert verdict["model"] == MODEL and verdict["version"] == "v1"
