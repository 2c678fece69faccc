"""The deployment files hold together without a Docker daemon or a cluster.

* docker-compose.yml validates against the Compose specification (check-jsonschema's vendored
  schema, offline) and a broken copy does not;
* the Kubernetes manifests validate against the Kubernetes schemas (kubernetes-validate, offline)
  and the KEDA objects point at what exists (Deployment, TriggerAuthentication, Secret keys);
* every command an image or a manifest runs parses as a real ``finsent`` subcommand, every
  FINSENT_* variable is a real setting and the values build valid Settings;
* the Dockerfiles copy files that exist and are not dockerignored, run as non-root, have a health
  check, and the wheel they install carries the shipped model;
* the Grafana dashboard and the alert rules query only metrics (and labels) that
  pipeline/metrics.py defines.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from pipeline.cli import app
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
FINSENT_IMAGES = {"finsent:cpu", "finsent:cuda", "finsent-cpu", "finsent-cuda"}
SETTING_NAMES = {f"FINSENT_{name.upper()}" for name in Settings.model_fields}


# ------------------------------------------------------------------ helpers


def interpolate(value: Any) -> Any:
    """Compose variable interpolation with every variable unset: ``${X:-d}`` -> d, ``${X}`` -> ''."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_docs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, object) of every cluster object in deploy/k8s (not the kustomization)."""
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] != "Kustomization":
                yield path.name, doc


def dockerfile_copies() -> dict[str, str]:
    """Container path -> repository path of every plain ``COPY src dst`` in the Dockerfiles."""
    mapping = {}
    for df in DEPLOY.glob("Dockerfile.*"):
        for line in df.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
                src, dst = parts[1:-1], parts[-1]
                for s in src:
                    mapping[dst if not dst.endswith("/") else dst + Path(s).name] = s
    return mapping


def parse_finsent(args: list[str]) -> Any:
    """Parse ``finsent ARGS`` with the real CLI (as the image's ENTRYPOINT ["finsent"] would),
    with container paths mapped back to the repository files the Dockerfiles copy there."""
    copies = dockerfile_copies()
    local = [str(ROOT / copies[a]) if a in copies else a for a in args]
    group = typer.main.get_command(app)
    assert local[0] in group.commands, f"`finsent {local[0]}` is not a finsent command"
    cmd = group.commands[local[0]]
    return cmd.make_context(local[0], local[1:])


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings built as a container would build them from ``env``; mounted files (TLS CAs)
    are replaced by empty files in ``tmp_path``."""
    for key in [k for k in list(__import__("os").environ) if k.startswith("FINSENT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if value.startswith("/etc/finsent/"):
            local = tmp_path / Path(value).name
            local.touch()
            value = str(local)
        monkeypatch.setenv(key, value)
    return Settings()


# ------------------------------------------------------------------ docker-compose


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], check=False, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_compose_file_validates_against_the_compose_spec(tmp_path: Path) -> None:
    ok = check_jsonschema(COMPOSE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["worker"]["restart_policy"] = "always"  # not a Compose key
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    result = check_jsonschema(bad)
    assert result.returncode != 0 and "restart_policy" in result.stdout + result.stderr


def test_compose_has_every_service_of_the_stack(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    kafka = svc["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]  # KRaft
    assert not any("ZOOKEEPER" in k for k in env)
    assert svc["redis"]["image"].startswith("redis:")
    assert "--appendonly" in svc["redis"]["command"]  # Redis is the commit point
    assert svc["topic-init"]["command"] == ["create-topics"]
    assert svc["worker"]["command"] == ["worker"]
    gpu = svc["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert gpu["environment"]["FINSENT_DEVICE"] == "cuda"
    assert svc["replay"]["command"][0] == "produce"
    for name in ("worker", "worker-gpu", "replay"):
        assert svc[name]["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    assert svc["prometheus"]["image"].startswith("prom/prometheus:")
    assert svc["grafana"]["image"].startswith("grafana/grafana:")
    for name, s in svc.items():
        for volume in s.get("volumes", []):
            host = volume.split(":")[0]
            assert (ROOT / host).exists(), f"{name} mounts {host}, which does not exist"
        for port in s.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


def test_compose_commands_are_real_finsent_commands(compose: dict[str, Any]) -> None:
    ran = set()
    for s in compose["services"].values():
        if s.get("image") in FINSENT_IMAGES:
            ctx = parse_finsent(interpolate(s["command"]))
            ran.add(ctx.info_name)
    assert ran == {"create-topics", "worker", "produce"}


def test_compose_settings_are_real_and_valid(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, s in compose["services"].items():
        if s.get("image") not in FINSENT_IMAGES:
            continue
        env = {k: str(v) for k, v in interpolate(s["environment"]).items()}
        assert set(env) <= SETTING_NAMES, f"{name}: unknown settings {set(env) - SETTING_NAMES}"
        settings = settings_from_env(env, monkeypatch, tmp_path)
        assert settings.bootstrap == "kafka:9092"
        assert settings.redis_password is not None and settings.redis_username == "finsent"
        redis_cmd = " ".join(interpolate(compose["services"]["redis"]["command"]))
        assert f"--user {settings.redis_username} on >{settings.redis_password.get_secret_value()}" in redis_cmd
    assert settings_from_env(interpolate(compose["services"]["worker-gpu"]["environment"]), monkeypatch,
                             tmp_path).device == "cuda"  # fmt: skip


def test_prometheus_scrapes_the_workers_metrics_port(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert set(sd["names"]) == {"worker", "worker-gpu"} <= set(compose["services"])
    assert sd["port"] == Settings().metrics_port == int(compose["services"]["worker"]["environment"]["FINSENT_METRICS_PORT"])
    k8s = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-k8s.yml").read_text())
    assert k8s["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"] == "pod"


# ------------------------------------------------------------------ Dockerfiles


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_is_multistage_nonroot_with_healthcheck(name: str) -> None:
    text = (DEPLOY / name).read_text()
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)", text, re.MULTILINE)
    assert [s for _, s in stages] == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "COPY --from=build /opt/finsent /opt/finsent" in runtime
    user = re.search(r"^USER\s+(\S+)", runtime, re.MULTILINE)
    assert user and user.group(1).split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD", runtime, re.MULTILINE)
    health = re.search(r"HEALTHCHECK[^\n]*\\\n\s+CMD (\[.*\])", runtime)
    assert health and "FINSENT_METRICS_PORT" in health.group(1) and "/metrics" in health.group(1)
    assert json.loads(re.search(r"^ENTRYPOINT (.*)$", runtime, re.MULTILINE).group(1)) == ["finsent"]
    parse_finsent(json.loads(re.search(r"^CMD (.*)$", runtime, re.MULTILINE).group(1)))
    # the build stage proves the shipped model loads and scores
    smoke = re.search(r"^RUN finsent (score .*?) >", text, re.MULTILINE)
    assert smoke is not None
    parse_finsent(shlex.split(smoke.group(1)))


def test_cpu_image_takes_torch_from_the_cpu_index_and_cuda_image_a_cuda_base() -> None:
    cpu = (DEPLOY / "Dockerfile.cpu").read_text()
    assert re.search(r"pip install --index-url https://download.pytorch.org/whl/cpu \"torch==", cpu)
    cuda = (DEPLOY / "Dockerfile.cuda").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", cuda, re.MULTILINE).group(1)
    assert base.startswith(("nvidia/cuda:", "pytorch/pytorch:")) and "cuda" in base
    assert "FINSENT_DEVICE=cuda" in cuda


def test_dockerfiles_copy_existing_files_the_context_keeps() -> None:
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False  # the last matching pattern wins, as in Docker
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path.split("/")[0], pat):
                verdict = not negate
        return verdict

    copies = dockerfile_copies()
    assert copies, "no COPY found"
    for src in copies.values():
        assert (ROOT / src).exists(), f"COPY {src}: missing"
        assert not ignored(src), f"COPY {src}: excluded by .dockerignore"
    assert ignored("runs") and ignored(".git") and ignored("tests")


@pytest.mark.slow
def test_the_installed_wheel_carries_the_shipped_model(tmp_path: Path) -> None:
    """What `pip install .` puts into the images: the model artifact and the sample feed."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)], check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("finsent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    model = ROOT / "models" / "artifacts" / "elbert-minilm-tfns"
    shipped = {f"models/artifacts/elbert-minilm-tfns/{p.relative_to(model).as_posix()}"
               for p in model.rglob("*") if p.is_file()}  # fmt: skip
    assert "models/artifacts/elbert-minilm-tfns/config.json" in shipped
    assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)}"
    assert "pipeline/data/sample_feed.jsonl" in names


# ------------------------------------------------------------------ Kubernetes


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    version = kubernetes_validate.utils.latest_version()
    kinds = []
    for name, doc in k8s_docs():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # CRDs: checked structurally below
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.append(doc["kind"])
    assert {"Namespace", "ConfigMap", "Secret", "Job", "Deployment", "PodDisruptionBudget"} <= set(kinds)
    bad = next(d for _, d in k8s_docs() if d["kind"] == "Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["bogus"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)


def test_kustomization_lists_existing_files() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kust["resources"]:
        assert (K8S / resource).is_file(), resource
    images = {i["name"] for i in kust["images"]}
    for _, doc in k8s_docs():
        for c in _containers(doc):
            assert c["image"] in images, f"{c['image']} is not rewritten by kustomization images"


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]["containers"]
    return []


def test_workloads_run_finsent_commands_securely() -> None:
    docs = list(k8s_docs())
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for _, doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
        assert doc["metadata"].get("namespace", "finsent") == "finsent"
    commands = set()
    for kind in ("Deployment", "Job"):
        for doc in by_kind[kind].values():
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
            assert pod["automountServiceAccountToken"] is False
            assert pod["serviceAccountName"] in by_kind["ServiceAccount"]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in pod["containers"]:
                commands.add(parse_finsent(c["args"]).info_name)
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
                assert sc["capabilities"]["drop"] == ["ALL"]
                assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "read-only root needs a /tmp"
                for ref in c["envFrom"]:
                    kind_ref, target = next(iter(ref.items()))
                    assert target["name"] in by_kind["ConfigMap" if kind_ref == "configMapRef" else "Secret"]
                for mount in c["volumeMounts"]:
                    assert mount["name"] in volumes
                ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                for probe in ("startupProbe", "livenessProbe"):
                    if probe in c:
                        assert c[probe]["httpGet"]["port"] in ports
                if ports:
                    assert ports["metrics"] == 9108
                    annotations = doc["spec"]["template"]["metadata"]["annotations"]
                    assert annotations["prometheus.io/port"] == str(ports["metrics"])
            for v in volumes.values():
                if "secret" in v:
                    assert v["secret"]["secretName"] in by_kind["Secret"]
    assert commands == {"worker", "create-topics"}
    gpu = by_kind["Deployment"]["finsent-worker-gpu"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {e["name"]: e["value"] for e in gpu["env"]}["FINSENT_DEVICE"] == "cuda"


def test_configmap_and_secret_make_valid_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs()}
    config = docs[("ConfigMap", "finsent-config")]["data"]
    secret = docs[("Secret", "finsent-secrets")]["stringData"]
    tls = docs[("Secret", "finsent-tls")]["stringData"]
    assert set(config) | set(secret) <= SETTING_NAMES
    assert not {k for k in config if "PASSWORD" in k}, "passwords belong in the Secret"
    for _, doc in k8s_docs():
        for c in _containers(doc):
            assert {e["name"] for e in c.get("env", [])} <= SETTING_NAMES
    s = settings_from_env({**config, **secret}, monkeypatch, tmp_path)
    assert s.kafka_security_protocol == "SASL_SSL" and s.kafka_sasl_mechanism.startswith("SCRAM")
    assert s.redis_url.startswith("rediss://") and s.redis_username and s.redis_password
    # the CA files the settings name are keys of the Secret mounted at /etc/finsent/tls
    for key in ("FINSENT_KAFKA_SSL_CAFILE", "FINSENT_REDIS_SSL_CAFILE"):
        assert config[key].startswith("/etc/finsent/tls/") and Path(config[key]).name in tls
    assert s.namespace and s.group_id.startswith(s.namespace), "one namespace and group per environment"


def test_keda_scales_the_worker_group_on_kafka_lag() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs()}
    config = docs[("ConfigMap", "finsent-config")]["data"]
    scaled = [d for (kind, _), d in docs.items() if kind == "ScaledObject"]
    assert {d["spec"]["scaleTargetRef"]["name"] for d in scaled} == {"finsent-worker-cpu", "finsent-worker-gpu"}
    for so in scaled:
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert ("Deployment", so["spec"]["scaleTargetRef"]["name"]) in docs
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        # a worker reads both input topics: more members than their partitions would sit idle
        assert so["spec"]["maxReplicaCount"] <= 2 * int(config["FINSENT_PARTITIONS"])
        (trigger,) = so["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["consumerGroup"] == config["FINSENT_GROUP_ID"]
        assert meta["bootstrapServers"] == config["FINSENT_BOOTSTRAP"]
        assert int(meta["lagThreshold"]) > 0 and meta["offsetResetPolicy"] == "earliest"
        auth = docs[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in docs[("Secret", ref["name"])]["stringData"]
        params = {r["parameter"] for r in auth["spec"]["secretTargetRef"]}
        assert {"sasl", "username", "password", "tls", "ca"} <= params
    keda_secret = docs[("Secret", "finsent-keda-kafka")]["stringData"]
    # KEDA's names for the SASL mechanisms finsent supports
    keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
    mechanism = keda_sasl[config["FINSENT_KAFKA_SASL_MECHANISM"]]
    assert keda_secret["sasl"] == mechanism and keda_secret["username"] == config["FINSENT_KAFKA_SASL_USERNAME"]


# ------------------------------------------------------------------ dashboards and alerts


def defined_metrics() -> dict[str, set[str]]:
    """Every series name pipeline/metrics.py exposes, with the labels a query may group by."""
    from prometheus_client import Counter, Gauge, Histogram

    from pipeline import metrics

    out: dict[str, set[str]] = {}
    for name in metrics.__all__:
        m = getattr(metrics, name)
        if not isinstance(m, Counter | Gauge | Histogram):
            continue
        labels = set(m._labelnames)
        if isinstance(m, Counter):
            out[f"{m._name}_total"] = labels
        elif isinstance(m, Histogram):
            for suffix in ("_bucket", "_sum", "_count"):
                out[m._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            out[m._name] = labels
    return out


def check_promql(expr: str, defined: dict[str, set[str]]) -> set[str]:
    """The finsent series ``expr`` uses; fails on an unknown series or label."""
    used = set(re.findall(r"\bfinsent_[a-z_]+", expr))
    assert used, f"no finsent metric in {expr!r}"
    for name in used:
        assert name in defined, f"{name} (in {expr!r}) is not defined in pipeline/metrics.py"
    allowed = set().union(*(defined[n] for n in used)) | {"job", "instance"}
    for group in re.findall(r"\bby \(([^)]*)\)", expr):
        for label in (x.strip() for x in group.split(",")):
            assert label in allowed, f"label {label!r} in {expr!r} is not on {sorted(used)}"
    for selector in re.findall(r"\{([^}]*)\}", expr):
        for label in re.findall(r"(\w+)\s*=~?", selector):
            assert label in allowed, f"label {label!r} in {expr!r}"
    return used


def test_dashboard_queries_only_defined_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "finsent.json").read_text())
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    defined = defined_metrics()
    used: set[str] = set()
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] in uids
        for target in panel["targets"]:
            used |= check_promql(target["expr"], defined)
    # the list: throughput, lag, batch size, exit layers, latency percentiles, DLQ rate
    for needed in ("finsent_messages_in_total", "finsent_consumer_lag", "finsent_batch_size_bucket",
                   "finsent_exit_layer_bucket", "finsent_ingest_to_redis_seconds_bucket", "finsent_dead_letters_total"):
        assert needed in used, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "finsent.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_a_dashboard_typo_would_be_caught() -> None:
    with pytest.raises(AssertionError, match="not defined"):
        check_promql("rate(finsent_mesages_in_total[1m])", defined_metrics())
    with pytest.raises(AssertionError, match="label 'symbol'"):
        check_promql("sum by (symbol) (rate(finsent_messages_in_total[1m]))", defined_metrics())


def test_alert_rules_query_only_defined_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    defined = defined_metrics() | {"up": set()}
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert exprs
    for expr in exprs:
        if expr.strip().startswith("up{"):
            continue
        check_promql(expr, defined)


# ------------------------------------------------------------------ create-topics (the topic-init entry point)


@pytest.mark.integration
def test_create_topics_command_makes_the_namespaced_topics(broker, ns: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from typer.testing import CliRunner

    run = CliRunner().invoke(app, ["create-topics", "--bootstrap", broker.bootstrap, "--namespace", ns,
                                   "--partitions", "3"])  # fmt: skip
    assert run.exit_code == 0, run.output
    s = Settings(namespace=ns)
    names = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
    assert run.output.count("created ") == 5 and all(n in run.output for n in names)

    async def partitions() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(names)
        finally:
            await admin.close()
        return {t["topic"]: len(t["partitions"]) for t in described}

    assert asyncio.run(partitions()) == dict.fromkeys(names, 3)
    again = CliRunner().invoke(app, ["create-topics", "--bootstrap", broker.bootstrap, "--namespace", ns,
                                     "--partitions", "5"])  # fmt: skip
    assert again.exit_code == 0 and again.output.count("exists ") == 5
    assert asyncio.run(partitions()) == dict.fromkeys(names, 3), "existing topics keep their partitions"
