"""The registry contract on both backends: immutable versions, compare-and-swap
aliases, history, and loading only what matches the manifest."""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
from pathlib import Path

import joblib
import pytest

from kubeloop import storage
from kubeloop.registry import (
    AliasConflict,
    IncompleteVersion,
    Registry,
    RegistryError,
    VersionInfo,
    VersionNotFound,
)
from kubeloop.storage import ConflictError, IntegrityError, NotFound, StorageError, open_store


def model_bytes(obj=None) -> bytes:
    import io

    buf = io.BytesIO()
    joblib.dump(obj if obj is not None else {"coef": [1.0, 2.0]}, buf)
    return buf.getvalue()


def files(tag: str = "a", **extra) -> dict:
    return {
        "model/model.joblib": model_bytes({"tag": tag}),
        "model/kubeloop.json": json.dumps({"tag": tag}).encode(),
        "metrics.json": json.dumps({"roc_auc": 0.9}).encode(),
        **extra,
    }


@pytest.fixture
def reg(store_uri) -> Registry:
    return Registry(store_uri)


# ----------------------------------------------------------------- versions


def test_register_list_show_resolve(reg, tmp_path):
    report = tmp_path / "evaluation.md"
    report.write_text("# evaluation\n")
    info = reg.register("churn", files(**{"reports/evaluation.md": str(report)}),
                        metadata={"task": "classification", "metrics": {"roc_auc": 0.9}})
    assert isinstance(info, VersionInfo)
    assert (info.model, info.version) == ("churn", "v1")
    assert info.sha256 == hashlib.sha256(files()["model/model.joblib"]).hexdigest()
    assert info.metadata["task"] == "classification"
    assert info.uri == reg.model_uri("churn", "v1") == storage.join(reg.uri, "churn/versions/v1/model")
    # The trailing "/" keeps a prefix listing (KServe's S3 download) out of model_card.md.
    assert reg.serving_uri("churn", "v1") == info.uri + "/"
    assert set(info.files) == {"model/model.joblib", "model/kubeloop.json", "metrics.json", "reports/evaluation.md"}
    assert info.files["reports/evaluation.md"] == {
        "sha256": hashlib.sha256(b"# evaluation\n").hexdigest(), "size": len(b"# evaluation\n")}

    assert reg.list_models() == ["churn"]
    assert [v.version for v in reg.list_versions("churn")] == ["v1"]
    assert reg.resolve("churn", "v1") == "v1"
    shown = reg.show("churn", "v1")
    assert shown["version"] == "v1" and shown["sha256"] == info.sha256 and shown["aliases"] == []
    assert shown["uri"] == info.uri
    assert reg.read_json("churn", "v1", "metrics") == {"roc_auc": 0.9}
    assert reg.read_bytes("churn", "v1", "reports/evaluation.md") == b"# evaluation\n"
    assert reg.file_uri("churn", "v1", "metrics.json") == storage.join(reg.uri, "churn/versions/v1/metrics.json")
    assert reg.verify("churn", "v1") == []
    # The storageUri folder holds exactly the files the predictor needs.
    store = open_store(reg.uri)
    assert store.list("churn/versions/v1/model/") == [
        "churn/versions/v1/model/kubeloop.json", "churn/versions/v1/model/model.joblib"]


def test_versions_are_numbered_and_sorted_numerically(reg):
    for i in range(11):
        assert reg.next_version("m") == f"v{i + 1}"
        reg.register("m", files(str(i)))
    assert [v.version for v in reg.list_versions("m")] == [f"v{i}" for i in range(1, 12)]


def test_versions_are_immutable(reg):
    first = reg.register("m", files("first"), version="v1")
    again = reg.register("m", files("second"), version="v1")
    assert again.version == "v2"  # the taken number is skipped, never overwritten
    assert reg.info("m", "v1").sha256 == first.sha256
    assert reg.load_model("m", "v1")[0] == {"tag": "first"}
    assert reg.load_model("m", "v2")[0] == {"tag": "second"}


def test_register_refuses_bad_input_before_claiming(reg, tmp_path):
    bad = [
        ("Bad_Name", files(), RegistryError),
        ("m", {"metrics.json": b"{}"}, RegistryError),  # no model file
        ("m", files(**{"../escape": b"x"}), RegistryError),
        ("m", files(**{"/abs": b"x"}), RegistryError),
        ("m", files(**{"MANIFEST.json": b"{}"}), RegistryError),
        ("m", files(**{"x.bin": str(tmp_path / "missing")}), RegistryError),
        ("m", files(**{"x.bin": 42}), RegistryError),
    ]
    for model, fs, exc in bad:
        with pytest.raises(exc):
            reg.register(model, fs)
    with pytest.raises(RegistryError, match="valid JSON"):
        reg.register("m", files(), metadata={"auc": float("nan")})
    assert reg.next_version("m") == "v1"  # nothing was claimed
    assert reg.list_models() == []


def test_concurrent_registrations_get_distinct_versions(reg):
    n = 4
    barrier = threading.Barrier(n)
    results: list[VersionInfo] = []

    def run(i: int) -> None:
        barrier.wait()
        results.append(reg.register("m", files(str(i)), version="v1"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.version for r in results) == ["v1", "v2", "v3", "v4"]
    assert [v.version for v in reg.list_versions("m")] == ["v1", "v2", "v3", "v4"]
    for r in results:
        assert reg.info("m", r.version).sha256 == r.sha256


def test_incomplete_version_is_invisible(reg):
    reg.register("m", files())
    store = open_store(reg.uri)
    # What a run that died mid-upload leaves behind: a claim and some files, no manifest.
    store.put_if_absent("m/versions/v2/CLAIM", b"{}")
    store.write_bytes("m/versions/v2/model/model.joblib", b"half")
    assert [v.version for v in reg.list_versions("m")] == ["v1"]
    assert reg.incomplete_versions("m") == ["v2"]
    assert reg.next_version("m") == "v3"
    with pytest.raises(IncompleteVersion, match="did not finish"):
        reg.resolve("m", "v2")
    with pytest.raises(IncompleteVersion):
        reg.set_alias("m", "production", "v2")
    assert reg.get_alias("m", "production") is None
    with pytest.raises(IncompleteVersion):
        reg.load_model("m", "v2")


def test_failed_registration_leaves_no_version(reg, monkeypatch):
    reg.register("m", files())
    calls = {"n": 0}
    real = type(reg.store).write_bytes

    def flaky(self, rel, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise StorageError("simulated outage")
        return real(self, rel, data)

    with monkeypatch.context() as patch:
        patch.setattr(type(reg.store), "write_bytes", flaky)
        with pytest.raises(StorageError, match="simulated outage"):
            reg.register("m", files("b"))
    assert [v.version for v in reg.list_versions("m")] == ["v1"]
    assert reg.incomplete_versions("m") == ["v2"]
    # What was uploaded is cleaned up; only the claim stays, so v2 is never reused.
    assert open_store(reg.uri).list("m/versions/v2/") == ["m/versions/v2/CLAIM"]
    assert reg.register("m", files("c")).version == "v3"


def test_not_found_messages_list_what_exists(reg):
    with pytest.raises(VersionNotFound, match="no versions of m"):
        reg.resolve("m", "production")
    reg.register("m", files())
    reg.set_alias("m", "production", "v1")
    with pytest.raises(VersionNotFound, match=r"versions: v1; aliases: production -> v1"):
        reg.resolve("m", "v7")
    with pytest.raises(VersionNotFound, match="no alias 'canary'"):
        reg.resolve("m", "canary")
    with pytest.raises(NotFound):  # also the storage-level and builtin kinds
        reg.show("m", "v9")
    with pytest.raises(NotFound, match="no file"):
        reg.read_bytes("m", "v1", "reports/none.md")


# ----------------------------------------------------------------- aliases


def test_alias_compare_and_swap(reg):
    for tag in "abc":
        reg.register("m", files(tag))
    assert reg.get_alias("m", "production") is None
    reg.set_alias("m", "production", "v1", expected_version=None)
    with pytest.raises(AliasConflict) as info:
        reg.set_alias("m", "production", "v2", expected_version=None)
    msg = str(info.value)
    assert "'production'" in msg and "nothing" in msg and "v1" in msg
    with pytest.raises(AliasConflict, match="expected to point at v3 but points at v1"):
        reg.set_alias("m", "production", "v2", expected_version="v3")
    assert reg.get_alias("m", "production") == "v1"
    reg.set_alias("m", "production", "v2", expected_version="v1")
    reg.set_alias("m", "production", "v3")  # no expectation: moves whatever it was
    assert reg.get_alias("m", "production") == "v3"
    assert reg.resolve("m", "production") == "v3"
    assert reg.show("m", "production")["aliases"] == ["production"]
    assert isinstance(info.value, ConflictError) and "Conflict" in type(info.value).__name__


def test_moving_production_sets_previous_and_history(reg):
    for tag in "abc":
        reg.register("m", files(tag))
    reg.set_alias("m", "production", "v1", reason="first")
    assert reg.get_alias("m", "previous") is None
    reg.set_alias("m", "production", "v2", expected_version="v1", reason="gate: better")
    assert reg.get_alias("m", "previous") == "v1"
    reg.set_alias("m", "canary", "v3")
    reg.set_alias("m", "production", "v3", reason="promote canary")
    assert reg.get_alias("m", "previous") == "v2"
    assert reg.aliases("m") == {"production": "v3", "previous": "v2", "canary": "v3"}
    assert reg.show("m", "v3")["aliases"] == ["canary", "production"]

    hist = reg.history("m")
    assert [(h["alias"], h["previous_version"], h["version"]) for h in hist] == [
        ("production", None, "v1"),
        ("production", "v1", "v2"),
        ("previous", None, "v1"),
        ("canary", None, "v3"),
        ("production", "v2", "v3"),
        ("previous", "v1", "v2"),
    ]
    assert hist[1]["reason"] == "gate: better"
    assert set(hist[0]) == {"alias", "version", "previous_version", "updated_at", "reason"}
    assert [h["updated_at"] for h in hist] == sorted(h["updated_at"] for h in hist)
    doc = json.loads(open_store(reg.uri).read_bytes("m/aliases/production.json"))
    assert doc["previous_version"] == "v2" and doc["alias"] == "production"


def test_setting_an_alias_to_its_current_version_changes_nothing(reg):
    reg.register("m", files())
    reg.set_alias("m", "production", "v1")
    reg.set_alias("m", "production", "v1", expected_version="v1")
    assert len(reg.history("m")) == 1


def test_alias_targets_and_names_are_checked(reg):
    reg.register("m", files())
    with pytest.raises(VersionNotFound):
        reg.set_alias("m", "production", "v5")
    for bad in ["Production", "v2", "", "has space", "x" * 64]:
        with pytest.raises(RegistryError):
            reg.set_alias("m", bad, "v1")
    with pytest.raises(RegistryError):
        reg.set_alias("m", "production", "1")
    reg.set_alias("m", "team-blue", "v1")  # any lowercase name
    assert reg.resolve("m", "team-blue") == "v1"


def test_racing_promotions_have_one_winner(reg):
    reg.register("m", files("champion"))
    reg.set_alias("m", "production", "v1")
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def run(tag: str) -> None:
        info = reg.register("m", files(tag))
        barrier.wait()
        try:
            reg.set_alias("m", "production", info.version, expected_version="v1", reason=tag)
            outcome[tag] = ("won", info.version)
        except AliasConflict as exc:
            outcome[tag] = ("lost", info.version, str(exc))

    threads = [threading.Thread(target=run, args=(t,)) for t in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [v for v in outcome.values() if v[0] == "won"]
    lost = [v for v in outcome.values() if v[0] == "lost"]
    assert len(won) == 1 and len(lost) == 1
    assert reg.get_alias("m", "production") == won[0][1]
    assert "expected to point at v1" in lost[0][2] and won[0][1] in lost[0][2]
    assert [v.version for v in reg.list_versions("m")] == ["v1", "v2", "v3"]
    assert reg.get_alias("m", "previous") == "v1"


def test_racing_first_promotions_have_one_winner(reg):
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def run(tag: str) -> None:
        info = reg.register("m", files(tag))
        barrier.wait()
        try:
            reg.set_alias("m", "production", info.version, expected_version=None)
            outcome[tag] = "won"
        except AliasConflict:
            outcome[tag] = "lost"

    threads = [threading.Thread(target=run, args=(t,)) for t in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcome.values()) == ["lost", "won"]
    assert len(reg.list_versions("m")) == 2


# ----------------------------------------------------------------- loading


class _Payload:
    """Unpickling this touches a marker file: proof of whether a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_model_returns_estimator_and_info(reg):
    from sklearn.linear_model import LinearRegression

    est = LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 2.0, 4.0])
    reg.register("m", {"model/model.joblib": model_bytes(est)})
    reg.set_alias("m", "production", "v1")
    loaded, info = reg.load_model("m", "production")
    assert loaded.predict([[3.0]])[0] == pytest.approx(6.0)
    assert info.version == "v1" and info.sha256 == reg.info("m", "v1").sha256


def test_model_saved_under_other_library_versions_is_refused_naming_both(reg, tmp_path):
    from kubeloop.environment import EnvironmentMismatch, pickle_versions

    marker = tmp_path / "unpickled"
    saved = {**pickle_versions(), "scikit-learn": "0.24.2"}
    reg.register("m", {"model/model.joblib": pickle.dumps(_Payload(marker)),
                       "model/kubeloop.json": json.dumps({"packages": saved}).encode()})
    with pytest.raises(EnvironmentMismatch) as err:
        reg.load_model("m", "v1")
    assert "m v1" in str(err.value) and "0.24.2" in str(err.value)
    assert pickle_versions()["scikit-learn"] in str(err.value)
    assert not marker.exists()  # refused before anything was unpickled
    reg.store.write_bytes("m/versions/v1/model/kubeloop.json",
                          json.dumps({"packages": pickle_versions()}).encode())
    reg.check_environment("m", "v1")  # the same versions pass


def test_tampered_model_is_never_loaded(reg, tmp_path):
    reg.register("m", files())
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_Payload(marker))
    open_store(reg.uri).write_bytes("m/versions/v1/model/model.joblib", evil)
    with pytest.raises(IntegrityError) as info:
        reg.load_model("m", "v1")
    msg = str(info.value)
    assert hashlib.sha256(evil).hexdigest() in msg
    assert reg.info("m", "v1").sha256 in msg
    assert not marker.exists()  # the bytes were never unpickled
    assert reg.verify("m", "v1") == [
        f"model/model.joblib: sha256 {hashlib.sha256(evil).hexdigest()}, manifest records {reg.info('m', 'v1').sha256}"
    ]
    # The check itself works: the same pickle, registered honestly, does run on load.
    reg.register("m", {"model/model.joblib": evil})
    reg.load_model("m", "v2")
    assert marker.exists()


def test_registry_errors_belong_to_kubeloop():
    for cls in (RegistryError, VersionNotFound, IncompleteVersion, AliasConflict):
        assert issubclass(cls, StorageError) and cls.__module__.startswith("kubeloop")
