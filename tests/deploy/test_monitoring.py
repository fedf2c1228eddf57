"""Prometheus config and alerts (promtool), and the Grafana dashboard: it parses, every metric and label it
queries is in the agent's /metrics output, and every query, run by promtool against series made from that output,
returns data."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent.test_metrics import exercised
from tests.deploy.tools import DEPLOY, run, tool

DASHBOARD = DEPLOY / "grafana" / "actionstream.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
TARGET = {"job": "actionstream", "instance": "agent:9108"}  # what Prometheus adds to every scraped series
METRIC = re.compile(r"\bactionstream_[a-zA-Z0-9_]+")
# Grafana's variables, as Grafana would expand them
MACROS = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "10m", "$camera": ".*", "$model": ".*"}


def exposition() -> str:
    return generate_latest(exercised().registry).decode()


def samples() -> dict[str, set[str]]:
    """Every sample name of the agent's /metrics output → its label names."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition()):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def queries(dash: dict) -> list[str]:
    return [t["expr"] for p in panels(dash) for t in p.get("targets", [])]


def expand(expr: str) -> str:
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    assert "$" not in expr, f"unexpanded variable in {expr}"
    return expr


# --- Prometheus -------------------------------------------------------------------------------------------------


def test_promtool_check_config():
    result = run([tool("promtool"), "check", "config", str(PROMETHEUS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "rules found" in result.stdout  # the alert rules were loaded too


def test_promtool_does_catch_mistakes(tmp_path):
    bad = yaml.safe_load(PROMETHEUS.read_text())
    bad["scrape_configs"][0]["scrape_intervall"] = "15s"
    bad["rule_files"] = [str(ALERTS)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(bad))
    result = run([tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode != 0 and "scrape_intervall" in result.stdout + result.stderr


def test_alert_metrics_exist():
    known = samples()
    for rule in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]:
        for name in METRIC.findall(rule["expr"]):
            assert name in known, f"alert {rule['alert']}: {name} is not in the agent's /metrics output"


def test_alerts_fire(tmp_path):
    """promtool's rule unit tests: a camera without frames, an agent off the broker, a model that keeps failing and
    inference that stalls while streams are up raise their alerts."""
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text())
    agent = "job='actionstream',instance='agent:9108'"
    series = [
        {"series": 'actionstream_stream_up{job="actionstream",instance="agent:9108",camera="dock1"}', "values": "0x20"},
        {"series": 'actionstream_stream_up{job="actionstream",instance="agent:9108",camera="lobby"}', "values": "1x20"},
        {"series": 'actionstream_mqtt_connected{job="actionstream",instance="agent:9108"}', "values": "1 1 0x18"},
        {"series": 'up{job="actionstream",instance="agent:9108"}', "values": "1x20"},
        {"series": f"actionstream_model_up{{{agent},model='kinetics'}}", "values": "1 1 0x18"},
        {"series": f"actionstream_model_up{{{agent},model='ava'}}", "values": "1x20"},
        # clips inferred until minute 5, then none, while a stream stays up
        {"series": f"actionstream_clips_inferred_total{{{agent},model='kinetics'}}", "values": "0+60x5 300x15"},
    ]
    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "ActionstreamStreamDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": "actionstream",
                                    "instance": "agent:9108",
                                    "camera": "dock1",
                                },
                                "exp_annotations": {"summary": "camera dock1 delivers no frames"},
                            }
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "ActionstreamMqttDisconnected",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "job": "actionstream", "instance": "agent:9108"},
                                "exp_annotations": {
                                    "summary": "agent agent:9108 is not connected to the MQTT broker "
                                    "(events wait in its queue)"
                                },
                            }
                        ],
                    },
                    {"eval_time": "10m", "alertname": "ActionstreamAgentDown", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "ActionstreamModelFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "job": "actionstream",
                                    "instance": "agent:9108",
                                    "model": "kinetics",
                                },
                                "exp_annotations": {
                                    "summary": "model kinetics: its runs keep failing (its cameras' actions were ended)"
                                },
                            }
                        ],
                    },
                    {"eval_time": "8m", "alertname": "ActionstreamInferenceStalled", "exp_alerts": []},
                    {
                        "eval_time": "16m",
                        "alertname": "ActionstreamInferenceStalled",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "instance": "agent:9108"},
                                "exp_annotations": {
                                    "summary": "agent agent:9108: streams are up but no clip was inferred for 5 minutes"
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run([tool("promtool"), "test", "rules", "tests.yml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana ----------------------------------------------------------------------------------------------------


def test_dashboard_parses_and_is_well_formed():
    dash = dashboard()
    assert dash["uid"] == "actionstream" and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    for p in panels(dash):
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
            assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"


def test_every_queried_metric_and_label_is_exposed_by_the_agent():
    known = samples()
    dash = dashboard()
    texts = queries(dash) + [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    assert texts
    allowed_extra = set(TARGET) | {"le"}
    for text in texts:
        names = METRIC.findall(text)
        assert names, f"query without an actionstream metric: {text}"
        labels = set().union(*(known.get(n, set()) for n in names)) | allowed_extra
        for name in names:
            assert name in known, f"{name} (in {text!r}) is not in the agent's /metrics output"
        for name, selector in re.findall(r"(actionstream_[a-zA-Z0-9_]+)\{([^}]*)\}", text):
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector):
                assert label in known[name] | allowed_extra, f"{name} has no label {label!r} (in {text!r})"
        for group in re.findall(r"\bby\s*\(([^)]*)\)", text):
            for label in (g.strip() for g in group.split(",")):
                assert label in labels, f"no queried metric has the label {label!r} (in {text!r})"
        for name, label in re.findall(r"label_values\((actionstream_[a-zA-Z0-9_]+),\s*(\w+)\)", text):
            assert label in known[name]


def test_dashboard_has_the_issue_panels():
    exprs = "\n".join(queries(dashboard()))
    titles = " | ".join(p["title"] for p in panels(dashboard()))
    required = {
        "streams up": r"actionstream_stream_up",
        "frames/s per camera": r"sum by \(camera\) \(rate\(actionstream_frames_decoded_total",
        "drops by reason": r"by \([^)]*reason[^)]*\) \(rate\(actionstream_frames_dropped_total",
        "inference seconds": r"histogram_quantile\(0\.99, [^\n]*rate\(actionstream_inference_seconds_bucket",
        "batch size": r"actionstream_batch_size_(sum|bucket)",
        "capture→publish p50": r"histogram_quantile\(0\.5, [^\n]*actionstream_event_latency_seconds_bucket",
        "capture→publish p99": r"histogram_quantile\(0\.99, [^\n]*actionstream_event_latency_seconds_bucket",
        "events by label": r"sum by \(label[^)]*\) \(increase\(actionstream_events_total",
        "MQTT connected": r"actionstream_mqtt_connected",
        "MQTT queued": r"actionstream_mqtt_queued_messages",
    }
    for what, pattern in required.items():
        assert re.search(pattern, exprs), f"no panel queries {what}"
    titles_wanted = ["Streams up", "Frames/s per camera", "Drops by reason", "Inference seconds", "Batch size"]
    titles_wanted += ["Capture → publish latency (p50 / p99)", "Events by label", "MQTT connected", "MQTT queued"]
    for title in titles_wanted:
        assert title in titles


def _series_from_exposition() -> list[dict]:
    """The agent's /metrics output as promtool input series over 20 minutes: counters and histograms grow by their
    value each minute, gauges hold theirs."""
    out = []
    for family in text_string_to_metric_families(exposition()):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted({**TARGET, **s.labels}.items()))
            growing = family.type in ("counter", "histogram")
            values = f"{s.value:g}+{s.value:g}x20" if growing else f"{s.value:g}x20"
            out.append({"series": f"{s.name}{{{labels}}}", "values": values})
    return out


def test_every_dashboard_query_returns_data(tmp_path):
    """Each panel query, with Grafana's variables expanded, runs in promtool against the agent's own metrics and
    yields at least one series (so names, labels, label values and PromQL are all right)."""
    exprs = sorted(set(queries(dashboard())))
    checks = [
        {"expr": f"clamp_max(count({expand(e)}), 1)", "eval_time": "15m", "exp_samples": [{"labels": "{}", "value": 1}]}
        for e in exprs
    ]
    (tmp_path / "none.yml").write_text("groups: []\n")
    tests = {
        "rule_files": ["none.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _series_from_exposition(), "promql_expr_test": checks}],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    result = run([tool("promtool"), "test", "rules", "tests.yml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_query_check_does_catch_a_wrong_label(tmp_path):
    """The check above means something: a query on a label the agent doesn't export returns nothing and fails."""
    check = {
        "expr": 'clamp_max(count(sum by (camera) (rate(actionstream_frames_decoded_total{camera="nope"}[2m]))), 1)',
        "eval_time": "15m",
        "exp_samples": [{"labels": "{}", "value": 1}],
    }
    (tmp_path / "none.yml").write_text("groups: []\n")
    tests = {
        "rule_files": ["none.yml"],
        "tests": [{"interval": "1m", "input_series": _series_from_exposition(), "promql_expr_test": [check]}],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False, width=1000))
    result = run([tool("promtool"), "test", "rules", "tests.yml"], cwd=tmp_path)
    assert result.returncode != 0


@pytest.mark.parametrize("path", sorted((DEPLOY / "grafana" / "provisioning").rglob("*.yaml")), ids=lambda p: p.name)
def test_provisioning_files(path):
    data = yaml.safe_load(path.read_text())
    assert data["apiVersion"] == 1
