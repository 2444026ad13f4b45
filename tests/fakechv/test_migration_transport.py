"""fakechv.migration: framed state transfer with an acknowledgement."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from fakechv import migration
from fakechv.migration import MigrationError, parse_url, receive_state, send_state

STATE: dict[str, Any] = {
    "config": {"disks": [{"id": "d0"}, {"id": "d2"}]},
    "device_tree": {"_virtio-pci-d2": {"pci_bdf": "0000:00:03.0"}},
    "device_id_cnt": 3,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _transfer(url: str, state: dict[str, Any]) -> dict[str, Any]:
    recv = asyncio.create_task(receive_state(url, accept_timeout=10))
    for _ in range(200):  # wait until the receiver listens
        await asyncio.sleep(0.01)
        try:
            await send_state(url, state)
            break
        except MigrationError as exc:
            if "cannot connect" not in str(exc):
                raise
    return await recv


def test_unix_round_trip(tmp_path: Path) -> None:
    url = f"unix:{tmp_path}/mig.sock"
    assert asyncio.run(_transfer(url, STATE)) == STATE
    # CHV leaves the receiver's socket file behind, so a second receive there fails
    assert (tmp_path / "mig.sock").is_socket()
    with pytest.raises(MigrationError, match="Error binding to UNIX socket"):
        asyncio.run(receive_state(url, accept_timeout=0.05))


def test_receive_never_takes_a_live_socket(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    other.listen(1)
    try:
        identity = path.stat().st_ino
        with pytest.raises(MigrationError, match="already in use"):
            asyncio.run(receive_state(f"unix:{path}", accept_timeout=0.05))
        assert path.stat().st_ino == identity
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(path))  # the other process still answers there
        probe.close()
    finally:
        other.close()


def test_tcp_loopback_round_trip() -> None:
    url = f"tcp:127.0.0.1:{_free_port()}"
    assert asyncio.run(_transfer(url, STATE)) == STATE


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("tcp:10.1.2.3:6000", "non-loopback host 10.1.2.3"),
        ("tcp:0.0.0.0:6000", "non-loopback host 0.0.0.0"),
        ("tcp:example.com:6000", "not a loopback address"),
        ("tcp:127.0.0.1:99999", "out of range"),
        ("tcp:127.0.0.1:x", "port 'x'"),
        ("file:///tmp/x", "unsupported scheme 'file'"),
        ("unix:", "empty socket path"),
        ("nocolon", "expected unix:<path>"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        parse_url(url)
    with pytest.raises(MigrationError, match=message):
        asyncio.run(receive_state(url, accept_timeout=0.1))


def test_ipv6_loopback_accepted() -> None:
    assert parse_url("tcp:[::1]:4000").host == "::1"
    assert parse_url("tcp:localhost:4000").port == 4000


def test_send_without_receiver_fails(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="Error connecting to UNIX socket"):
        asyncio.run(send_state(f"unix:{tmp_path}/none.sock", STATE))


def test_receiver_refusal_reaches_sender(tmp_path: Path) -> None:
    url = f"unix:{tmp_path}/r.sock"

    def refuse(state: dict[str, Any]) -> None:
        raise ValueError("a VM already exists")

    async def scenario() -> tuple[BaseException | None, BaseException | None]:
        recv = asyncio.create_task(receive_state(url, accept_timeout=10, validate=refuse))
        while not os.path.exists(tmp_path / "r.sock"):
            await asyncio.sleep(0.01)
        send_exc: BaseException | None = None
        try:
            await send_state(url, STATE)
        except MigrationError as exc:
            send_exc = exc
        recv_exc = (await asyncio.gather(recv, return_exceptions=True))[0]
        return send_exc, recv_exc if isinstance(recv_exc, BaseException) else None

    send_exc, recv_exc = asyncio.run(scenario())
    assert "refused by the receiver: a VM already exists" in str(send_exc)
    assert isinstance(recv_exc, MigrationError)


def test_cut_transfer_fails_on_both_sides(tmp_path: Path) -> None:
    url = f"unix:{tmp_path}/c.sock"

    async def scenario() -> BaseException | dict[str, Any]:
        recv = asyncio.create_task(receive_state(url, accept_timeout=10, timeout=5))
        while not os.path.exists(tmp_path / "c.sock"):
            await asyncio.sleep(0.01)
        _reader, writer = await asyncio.open_unix_connection(str(tmp_path / "c.sock"))
        writer.write(migration.MAGIC + (1000).to_bytes(8, "big") + b'{"partial":')
        await writer.drain()
        writer.close()
        return (await asyncio.gather(recv, return_exceptions=True))[0]

    result = asyncio.run(scenario())
    assert isinstance(result, MigrationError)
    assert "connection closed" in str(result)


def test_receiver_that_vanishes_fails_the_sender(tmp_path: Path) -> None:
    path = str(tmp_path / "v.sock")

    async def scenario() -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(10)
            writer.close()

        server = await asyncio.start_unix_server(swallow, path)
        async with server:
            await send_state(f"unix:{path}", STATE, timeout=5)

    with pytest.raises(MigrationError, match="waiting for the receiver"):
        asyncio.run(scenario())


def test_receiver_times_out_without_sender(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="no sender connected"):
        asyncio.run(receive_state(f"unix:{tmp_path}/t.sock", accept_timeout=0.05))
    assert (tmp_path / "t.sock").is_socket()  # left behind, as by CHV
