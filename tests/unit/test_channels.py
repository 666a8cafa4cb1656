"""``kind: Channel`` manifests and ``spec.notify``: validation with file/line/field, the
plan's channel changes and the refusal to delete a channel still in use, ``diff``."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main as cli
from reconciler.core.model import DesiredState
from reconciler.core.plan import Action, plan
from reconciler.core.redaction import redact
from reconciler.manifests import load_directory, parse_file

CHANNEL = """\
apiVersion: reconciler/v1
kind: Channel
metadata:
  name: ops
spec:
"""
TASK = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: nightly}
spec:
  schedule: "@daily"
  run: {shell: "false"}
"""


def errors_of(text: str) -> list[str]:
    return [str(e) for e in parse_file(text.encode(), label="m.yaml").errors]


def test_each_channel_type_loads() -> None:
    for spec in (
        "  webhook: {url: 'http://127.0.0.1:9/h', secret: {fromEnv: KEY}}\n",
        "  slack: {url: {fromFile: /run/secrets/slack}}\n",
        "  email:\n    smtp: {host: 127.0.0.1, port: 2525, starttls: false}\n"
        "    from: r@example.org\n    to: [ops@example.org]\n",
    ):
        result = parse_file((CHANNEL + spec).encode(), label="m.yaml")
        assert result.errors == () and [c.name for c in result.channels] == ["ops"]


@pytest.mark.parametrize(("spec", "expected"), [
    ("  webhook: {url: 'http://a/'}\n  slack: {url: 'https://b/'}\n",
     "m.yaml:6:3: ops: spec: exactly one of webhook, slack or email is required "
     "(got webhook, slack)"),
    ("  selector: team=data\n",
     "m.yaml:6:3: ops: spec: exactly one of webhook, slack or email is required"),
    ("  webhook: {url: 'ftp://a/'}\n",
     "m.yaml:6:18: ops: spec.webhook.url: String should match pattern"),
    ("  webhook: {url: 'http://a/', secret: plain-text}\n",
     "m.yaml:6:39: ops: spec.webhook.secret: expected {fromEnv: ...} or {fromFile: ...}, "
     "got a string"),
    ("  email: {smtp: {host: h, password: {fromEnv: P}}, from: a@b, to: [c@d]}\n",
     "m.yaml:6:17: ops: spec.email.smtp: password is set but username is not"),
    ("  webhook: {url: 'http://a/'}\n  selector: 'team in (a'\n",
     "m.yaml:7:13: ops: spec.selector:"),
])
def test_a_bad_channel_names_file_line_and_field(spec: str, expected: str) -> None:
    (error,) = errors_of(CHANNEL + spec)
    assert error.startswith(expected), error


def test_notify_defaults_and_the_yaml_on_key() -> None:
    text = (CHANNEL + "  webhook: {url: 'http://a/'}\n---\n" + TASK
            + "  notify:\n    - channel: ops\n      on: [failed, succeeded]\n")
    result = parse_file(text.encode(), label="m.yaml")
    assert result.errors == ()
    (task,) = result.tasks
    assert task.document["spec"]["notify"] == [{"channel": "ops",
                                                "on": ["failed", "succeeded"]}]
    default = parse_file((TASK + "  notify: [{channel: ops}]\n").encode(), label="t.yaml")
    assert default.tasks[0].document["spec"]["notify"] == [{"channel": "ops"}]  # default on


@pytest.mark.parametrize(("notify", "expected"), [
    ("  notify: [{channel: ops, on: [exploded]}]\n",
     "m.yaml:7:32: nightly: spec.notify[0].on[0]: Input should be 'failed'"),
    ("  notify: [{channel: ops}, {channel: ops}]\n", "m.yaml:7:11: nightly: spec.notify: a "
     "channel is named twice"),
    ("  notify: [{channel: ops, on: []}]\n",
     "m.yaml:7:31: nightly: spec.notify[0].on: List should have at least 1"),
])
def test_a_bad_notify_rule_names_file_line_and_field(notify: str, expected: str) -> None:
    (error,) = errors_of(TASK + notify)
    assert error.startswith(expected), error


def test_an_unknown_channel_fails_the_task_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CHANNEL + "  webhook: {url: 'http://a/'}\n")
    (tmp_path / "t.yaml").write_text(TASK + "  notify:\n    - channel: ops\n    - channel: opz\n")
    desired = load_directory(tmp_path)
    (error,) = desired.errors
    assert str(error).startswith(
        't.yaml:9:16: nightly: spec.notify[1].channel: unknown channel "opz"')
    assert desired.failed_files == {"t.yaml"} and desired.tasks == ()
    assert [c.name for c in desired.channels] == ["ops"]


def test_a_channel_declared_twice_is_frozen(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CHANNEL + "  webhook: {url: 'http://a/'}\n")
    (tmp_path / "b.yaml").write_text(CHANNEL + "  webhook: {url: 'http://b/'}\n")
    desired = load_directory(tmp_path)
    assert desired.frozen_channels == {"ops"} and desired.channels == ()
    assert 'channel name "ops" is declared more than once (first declared at a.yaml:4)' in str(
        desired.errors[0])


def test_the_plan_deletes_an_unused_channel_and_refuses_a_used_one(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CHANNEL + "  webhook: {url: 'http://a/'}\n")
    (tmp_path / "t.yaml").write_text(TASK + "  notify: [{channel: ops}]\n")
    first = load_directory(tmp_path)
    from reconciler.service import actual_from_desired, channels_from_desired

    tasks, channels = list(actual_from_desired(first)), list(channels_from_desired(first))
    (tmp_path / "c.yaml").unlink()
    p = plan(load_directory(tmp_path), tasks, channels=channels)
    assert [(c.name, c.action) for c in p.channels] == [("ops", Action.DELETE)]
    assert [(c.name, c.action) for c in p.changes] == [("nightly", Action.KEEP)]
    assert p.refusals == ('plan deletes channel "ops" but task(s) nightly still notify it; '
                          "remove it from their spec.notify first",)
    (tmp_path / "t.yaml").write_text(TASK)
    p = plan(load_directory(tmp_path), tasks, channels=channels)
    assert not p.refused and p.channels_of(Action.DELETE)


def test_channels_are_kept_when_the_directory_is_missing() -> None:
    from reconciler.core.runtime import ActualChannel

    have = [ActualChannel("ops", {"spec": {"webhook": {"url": "http://a/"}}}, "h", 1, "c.yaml")]
    p = plan(DesiredState(tasks=(), directory_missing=True), [], channels=have)
    assert [c.action for c in p.channels] == [Action.KEEP]


def test_diff_shows_channel_lines_with_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
    m = tmp_path / "m"
    m.mkdir()
    (m / "c.yaml").write_text(CHANNEL + "  slack: {url: 'https://hooks.slack.com/services/T/B/s3cr3t'}\n")
    (m / "d.yaml").write_text(CHANNEL.replace("ops", "dev") + "  webhook:\n    url: http://a/\n"
                              "    headers: {Authorization: Bearer tok3n}\n")
    assert cli.main(["apply", "--manifests", str(m)]) == 0
    assert "+ channel ops  slack  from c.yaml" in capsys.readouterr().out
    (m / "c.yaml").write_text(CHANNEL + "  slack: {url: 'https://hooks.slack.com/services/T/B/n3w'}\n")
    (m / "d.yaml").unlink()
    assert cli.main(["diff", "--manifests", str(m)]) == 2
    out = capsys.readouterr().out
    assert "~ channel ops\n    ~ spec.slack.url: \"***\" -> \"***\" (secrets masked)" in out
    assert "- channel dev  (was in d.yaml)" in out
    assert "s3cr3t" not in out and "n3w" not in out and "tok3n" not in out
    assert cli.main(["diff", "--manifests", str(m), "-o", "json"]) == 2
    out = capsys.readouterr().out
    assert '"action": "update"' in out and "n3w" not in out


def test_redaction_of_channel_secrets() -> None:
    doc = {"spec": {"webhook": {"url": "http://a/", "headers": {"X-Api-Key": "k3y",
                                                                "X-Team": "data"}}}}
    assert redact(doc)["spec"]["webhook"]["headers"] == {"X-Api-Key": "***", "X-Team": "data"}
    assert redact({"spec": {"slack": {"url": "https://hooks.slack.com/x"}}}) == {
        "spec": {"slack": {"url": "***"}}}
