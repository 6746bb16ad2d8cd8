"""A complete snoopbus plugin: print one line per exec, on any host."""

from snoopbus.consumers import Batch, consumer
from snoopbus.proto import events_filter


@consumer("exec-printer", filters=[events_filter(family="proc", type="exec")])
async def exec_printer(batch: Batch) -> None:
    """print every exec as: host pid argv"""
    for event in batch.events:
        proc = event.get("proc", {})
        print(event["host"], proc.get("pid"), " ".join(proc.get("argv", [])), flush=True)
