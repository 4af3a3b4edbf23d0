"""The deployment examples in deploy/ parse, agree with each other and with the exporter."""
from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml

from surgewatch.config import parse_settings
from surgewatch.ops.metrics import EXPORTED_METRICS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _k8s() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def test_the_beat_deployment_is_a_single_replica_that_is_recreated_not_rolled():
    beat = _k8s()[("Deployment", "surgewatch-beat")]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"


def test_worker_deployments_scale_out_and_between_them_consume_every_queue():
    docs = _k8s()
    workers = [d for (kind, name), d in docs.items() if kind == "Deployment" and name.startswith("surgewatch-worker")]
    assert workers and all(w["spec"]["replicas"] >= 2 for w in workers)
    queues: set[str] = set()
    for w in workers:
        command = w["spec"]["template"]["spec"]["containers"][0]["command"]
        queues |= set(command[command.index("--queues") + 1].split(","))
        # the grace period outlasts the Celery hard time limit (90 s), so a rollout lets tasks finish
        assert w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 90
    assert queues == {"collect", "detect", "notify"}


def test_the_configmap_holds_a_valid_config_whose_secrets_come_from_the_secret():
    docs = _k8s()
    text = docs[("ConfigMap", "surgewatch-config")]["data"]["surgewatch.yaml"]
    secret_keys = set(docs[("Secret", "surgewatch-secrets")]["stringData"])
    needed = set(re.findall(r"\$\{([A-Z_]+)\}", text))
    assert needed and needed <= secret_keys
    settings = parse_settings(yaml.safe_load(text), "configmap", env={k: "x" for k in secret_keys})
    assert settings.store.url.startswith("redis://") and settings.broker.url.startswith("redis://")


def test_the_metrics_service_selects_the_metrics_pods_on_the_port_they_listen_on():
    docs = _k8s()
    service = docs[("Service", "surgewatch-metrics")]
    pod = docs[("Deployment", "surgewatch-metrics")]["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 9464
    assert container["command"][container["command"].index("--port") + 1] == "9464"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_systemd_units_parse_and_start_the_right_processes():
    units = {}
    for path in (DEPLOY / "systemd").glob("*.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # keys are case-sensitive in systemd
        parser.read_string(path.read_text())
        units[path.name] = parser
    assert set(units) == {"surgewatch-worker@.service", "surgewatch-beat.service", "surgewatch-metrics.service"}
    worker = units["surgewatch-worker@.service"]["Service"]
    assert "-Q ${SURGEWATCH_QUEUES}" in worker["ExecStart"] and "-n %i@%H" in worker["ExecStart"]
    assert int(worker["TimeoutStopSec"]) > 90
    assert " beat " in units["surgewatch-beat.service"]["Service"]["ExecStart"]
    assert " metrics " in units["surgewatch-metrics.service"]["Service"]["ExecStart"]
    for unit in units.values():
        assert unit["Service"]["Restart"] == "always"
        assert "Token" not in unit["Service"].get("Environment", "")


def test_prometheus_rules_and_scrape_config_use_only_exported_metrics():
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert {job["job_name"] for job in scrape["scrape_configs"]} >= {"surgewatch"}
    rules = yaml.safe_load((DEPLOY / "surgewatch-rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"\bsurgewatch_[a-z0-9_]+", expr))
        assert names and names <= EXPORTED_METRICS, expr
