"""The live view's model and rendering, without a terminal or a bus."""

from __future__ import annotations

from rich.console import Console

from snoopbus.app.live import ChildView, LiveState, batch_size
from snoopbus.app.stack import StackConfig
from snoopbus.consumers import cli as consumers_cli
from snoopbus.consumers import plugin
from snoopbus.proto import encode_batch
from snoopbus.proto.settings_file import load


def event(i: int, type_: str = "create", comm: str = "cp", pid: int = 7) -> dict:
    return {"v": 1, "id": f"x-{i}", "ts": 1_700_000_000_000_000_000, "host": "h", "type": type_,
            "proc": {"pid": pid, "comm": comm}, "file": {"path": f"/data/f{i}"}}


def text(state: LiveState, now: float) -> str:
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(state.render(now))
    console.file.close()
    return console.export_text()


def test_batch_size_reads_the_array_header() -> None:
    for n in (1, 15, 16, 300, 10_000):
        assert batch_size(encode_batch([event(i) for i in range(n)])) == n
    assert batch_size(b"\xdd" + (70_000).to_bytes(4, "big")) == 70_000
    assert batch_size(b"") == 0


def test_rates_alerts_loss_and_top_processes() -> None:
    state = LiveState(host="h", url="nats://127.0.0.1:4222", state_dir="/s", started=0.0)
    state.collector_since = 0.0
    state.children = [ChildView("collector", 11, "running"), ChildView("rename", 12, "running")]
    assert "compiling and loading the eBPF probes" in text(state, 1.0)
    for second in range(10, 15):  # 5 whole seconds of 40 events each
        state.on_events("snoopbus.events.h.file.create",
                        encode_batch([event(i) for i in range(40)]), now=second + 0.5)
    state.on_events("snoopbus.events.h.proc.exec", encode_batch([event(0, "exec")]), now=14.5)
    assert state.rates(now=15.0) == {"create": 40.0, "exec": 0.2}
    state.on_meta("status", {"state": "ready", "startup_s": 1.25})
    state.on_meta("loss", {"total": 3, "dropped": {"kernel_ringbuf_full": 3}})
    state.on_alert({"level": "high", "rule": {"title": "Exec from /tmp"}, "ts": 0,
                    "event": {"proc": {"pid": 9, "exe": "/tmp/x"}}})
    state.lag["rename"] = (42, 0)
    state.notes.append("02:00:00 rename exited with -9; restarting in 1s")
    shown = text(state, 15.0)
    assert "collector ready (probes loaded in 1.25s)" in shown
    assert "create" in shown and "40.0" in shown
    assert "loss: 3 events (kernel_ringbuf_full=3)" in shown
    assert "Exec from /tmp" in shown and "HIGH" in shown
    assert "cp" in shown and "/data/f" in shown  # top processes by file activity
    assert "42" in shown and "rename exited with -9" in shown


def test_up_gives_children_the_config_metrics_ports_and_excludes_its_state(tmp_path) -> None:
    cfg = StackConfig(state_dir=tmp_path, metrics_port=9400, host="web1",
                      config_path=tmp_path / "c.toml", collector_excludes=("/proc",))
    kids = cfg.children("nats://127.0.0.1:4222")
    assert [k.name for k in kids] == ["collector", "rename", "alert", "archive"]
    collect = kids[0].args
    assert collect[:3] == ["collect", "--config", str(tmp_path / "c.toml")]
    assert collect[-2:] == ["--metrics-port", "9401"]
    assert "--exclude-path" in collect and str(tmp_path.resolve()) in collect and "/proc" in collect
    archive = kids[3].args
    assert archive[3] == "archive" and str(tmp_path / "archive") in archive
    assert archive[-2:] == ["--metrics-port", "9404"]


def test_forwarding_runs_only_when_configured(tmp_path) -> None:
    assert "forward" not in StackConfig.from_config(load(None, env={})).consumers
    path = tmp_path / "c.toml"
    path.write_text('[consumer.forward]\nto = ["syslog+tcp://siem.example:514"]\n')
    cfg = load(path, env={})
    stack = StackConfig.from_config(cfg)
    assert stack.consumers == ("rename", "alert", "archive", "forward")
    parser = consumers_cli._consumer_parser("forward", plugin.load("forward"), cfg.nats.url)
    consumers_cli.apply_config(parser, "forward", cfg)
    assert len(parser.parse_args([]).sinks) == 1  # --to comes from the file


def test_a_long_path_does_not_squeeze_the_comm_out_of_a_narrow_screen() -> None:
    # Seen in CI: with long paths the comm column shrank to nothing in an 80-column pane.
    state = LiveState(host="h", url="nats://127.0.0.1:4222", state_dir="/s", started=0.0)
    long_path = "/tmp/pytest-of-root/pytest-309/test_up_live_view_in_a_termina0/work/" + "x" * 60
    ev = {**event(0, comm="sbmk4eabb6"), "file": {"path": long_path}}
    state.on_events("snoopbus.events.h.file.create", encode_batch([ev]), now=1.0)
    console = Console(width=80, record=True, file=open("/dev/null", "w"))
    console.print(state.render(2.0))
    console.file.close()
    shown = console.export_text()
    assert "sbmk4eabb6" in shown
    assert "/tmp/pytest-of-root" in shown  # the path is cut, not dropped


def test_up_keeps_the_collector_spill_in_its_state_folder(tmp_path) -> None:
    cfg = StackConfig.from_config(load(None, env={"SNOOPBUS_UP_STATE_DIR": str(tmp_path)}))
    args = cfg.collector_args("nats://127.0.0.1:4222")
    assert args[args.index("--spill-dir") + 1] == str(tmp_path / "spill")
    # One the user chose is theirs to keep: the collector reads it from the same config.
    chosen = load(None, env={"SNOOPBUS_COLLECTOR_SPILL_DIR": "/srv/spill"})
    assert "--spill-dir" not in StackConfig.from_config(chosen).collector_args("nats://x")
