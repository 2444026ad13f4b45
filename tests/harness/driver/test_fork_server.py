"""fakechv processes forked from a warm fork server (fakechv.zygote) are processes of
their own, like spawned ones: own pid, socket, VMM and log; they end when asked."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path

from fakechv import zygote
from harness.chv.client import ChvClient, ChvError
from harness.driver.launcher import ForkedProcess, ProcessLauncher


def test_forked_hypervisors_are_separate_processes(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = ProcessLauncher("v52", run_dir=tmp_path, fork_server=True)
        a = await launcher.launch("a")
        b = await launcher.launch("b")
        try:
            assert isinstance(a.process, ForkedProcess) and isinstance(b.process, ForkedProcess)
            assert a.process.pid != b.process.pid != os.getpid()
            ping_a = await ChvClient(a.transport).ping()
            assert ping_a["pid"] == a.process.pid and ping_a["version"].startswith("52.")
            await ChvClient(a.transport).call("PUT", "vm.create", {"payload": {"kernel": "/k"}})
            info_a = await ChvClient(a.transport).call("GET", "vm.info", None)
            assert info_a["config"]["payload"]["kernel"] == "/k"
            try:  # b has a VMM of its own, with no VM
                await ChvClient(b.transport).call("GET", "vm.info", None)
            except ChvError as exc:
                assert "VM is not created" in str(exc)
            else:
                raise AssertionError("b sees a's VM")
        finally:
            await launcher.terminate(a)
            await launcher.terminate(b)
        assert a.process.poll() is not None and b.process.poll() is not None
        assert not Path(a.key).exists()

    asyncio.run(go())


def test_a_bad_request_gets_an_error_line() -> None:
    answers = io.StringIO()
    zygote.serve(io.StringIO('{"no argv": 1}\n\nnot json\n'), answers)
    lines = [json.loads(line) for line in answers.getvalue().splitlines()]
    assert len(lines) == 2 and all("bad request" in line["error"] for line in lines)


def test_a_hypervisor_blocked_in_a_request_is_stopped_by_signal(tmp_path: Path) -> None:
    """A receiving VMM answers nothing else (vmm.shutdown would wait behind
    vm.receive-migration, as on real CHV): ``terminate(ask=False)`` signals it."""

    async def go() -> None:
        launcher = ProcessLauncher("v53", run_dir=tmp_path)  # its own child: exit status
        hv = await launcher.launch("dst")
        client = ChvClient(hv.transport)
        receiving = asyncio.create_task(client.receive_migration(f"unix:{tmp_path}/m.sock"))
        for _ in range(1000):  # until the receiver listens (or the request fails)
            if (tmp_path / "m.sock").exists() or receiving.done():
                break
            await asyncio.sleep(0.005)
        assert not receiving.done() and (tmp_path / "m.sock").exists()
        receiving.cancel()
        await launcher.terminate(hv, ask=False)
        # it ended by itself on SIGTERM (exit 0), not by the SIGKILL that follows a
        # VMM that does not stop
        assert hv.process is not None and hv.process.poll() == 0

    asyncio.run(go())
