"""The ``fakechv`` / ``cloud-hypervisor`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from fakechv.profiles import PROFILES

__all__ = ["build_parser", "main", "split_chv_args"]

log = logging.getLogger("fakechv")

PROFILE_ENV_DEFAULT = "FAKECHV_PROFILE"
DEFAULT_PROFILE = "v53"

#: Options this command understands; anything else that looks like an option
#: is a cloud-hypervisor flag that fakechv does not emulate (ignored, warned).
_OWN_WITH_VALUE = {
    "--api-socket",
    "--event-monitor",
    "--log-file",
    "--profile",
    "--eject-delay-ms",
    "--eject",
    "--fault",
    "--images",
    "--image-root",
}
_OWN_FLAGS = {"--version", "-V", "--help", "-h"}

DESCRIPTION = """\
fakechv: a fake Cloud Hypervisor VMM. It serves CHV's HTTP API on a Unix socket
with CHV's PCI segment/slot rules, error bodies and status codes of the chosen
release, without running any guest.
"""

EPILOG = """\
cloud-hypervisor options that are emulated:
  --api-socket path=P | fd=N | P   API socket: a new socket at P (mode 0600, a
                                   stale socket file is replaced, removed on
                                   exit) or an inherited bound/listening fd N
  --event-monitor path=P | fd=N    write VMM events in CHV's format (pretty JSON
                                   records separated by a blank line); a FIFO
                                   path blocks until its reader opens it
  --log-file F                     log to F instead of stderr
  -v                               more logging (-v info, -vv debug)
  --version, -V                    print the release banner of the profile
Every other cloud-hypervisor option (--kernel, --cpus boot=2, --seccomp false,
--disk a b, ...) is accepted and ignored with a warning: configure the VM
through the API (vm.create).

fakechv options:
@PROFILE_OPTION@CHV release to emulate (default: $FAKECHV_PROFILE,
                                   else v53)
  --eject-delay-ms N               the guest ejects a removed device N ms after
                                   vm.remove-device
  --eject never|immediate|realistic
                                   never: the guest never ejects (the slot stays
                                   busy); immediate: eject at once (the default);
                                   realistic: after 2.4-8 s, as a real guest here
  --fault ENDPOINT[:COUNT[:STATUS]]
                                   the next COUNT (default 1) calls of ENDPOINT
                                   (an endpoint of the profile, e.g. vm.add-disk)
                                   fail with STATUS (default 500) and CHV's error
                                   body for it; repeatable, rules are used in
                                   order (vm.add-disk:1, vm.add-net:2:500)
  --images check|create|virtual    disk images: check (the default, CHV's):
                                   each disk's file is opened, typed and
                                   locked (OFD locks, as CHV's), the kernel
                                   must open; create: every image is a sparse
                                   file under --image-root (made if missing,
                                   host paths never touched); virtual: no
                                   file, every path an empty raw image
  --image-root DIR                 where --images create keeps the images

examples:
  fakechv --api-socket /tmp/chv.sock
  curl --unix-socket /tmp/chv.sock http://localhost/api/v1/vmm.ping
  FAKECHV_PROFILE=v51 cloud-hypervisor --api-socket path=/tmp/chv.sock -v
  fakechv --profile head --eject-delay-ms 50 --api-socket fd=3 --event-monitor path=/tmp/ev
  fakechv --version --profile v52
"""
_PROFILE_CHOICES = "{" + ",".join(PROFILES) + "}"
EPILOG = EPILOG.replace("@PROFILE_OPTION@", f"{'  --profile ' + _PROFILE_CHOICES:<35}")


class CliError(Exception):
    """A bad command line (exit code 2)."""


@dataclass
class SplitArgs:
    own: list[str] = field(default_factory=list)
    ignored: list[list[str]] = field(default_factory=list)


def split_chv_args(argv: Sequence[str]) -> SplitArgs:
    """Separate the options fakechv handles from other cloud-hypervisor options.

    An unknown option takes the following non-option words as its values
    (``--disk a b``), like clap's multi-value options."""
    out = SplitArgs()
    i = 0
    while i < len(argv):
        tok = argv[i]
        name = tok.split("=", 1)[0] if tok.startswith("--") else tok
        if name in _OWN_WITH_VALUE:
            out.own.append(tok)
            if "=" not in tok and i + 1 < len(argv):
                out.own.append(argv[i + 1])
                i += 1
        elif name in _OWN_FLAGS or (tok.startswith("-v") and set(tok[1:]) == {"v"}):
            out.own.append(tok)
        elif tok.startswith("-") and tok != "-":
            group = [tok]
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                group.append(argv[i + 1])
                i += 1
            out.ignored.append(group)
        else:
            out.own.append(tok)  # argparse reports the stray word
        i += 1
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(prog: str = "fakechv") -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--api-socket", metavar="path=P|fd=N|P", help="API socket (see below)")
    p.add_argument("--event-monitor", metavar="path=P|fd=N", help="event monitor output")
    p.add_argument("--log-file", metavar="FILE", help="log file (default: stderr)")
    p.add_argument("-v", dest="verbose", action="count", default=0, help="more logging")
    p.add_argument("-V", "--version", action="store_true", help="print version and exit")
    p.add_argument(
        "--profile",
        metavar=_PROFILE_CHOICES,
        help="CHV release to emulate (default: $FAKECHV_PROFILE, else v53)",
    )
    ej = p.add_mutually_exclusive_group()
    ej.add_argument("--eject-delay-ms", metavar="N", help="eject delay after vm.remove-device")
    ej.add_argument(
        "--eject",
        metavar="never|immediate|realistic",
        help="when the simulated guest ejects removed devices",
    )
    p.add_argument("--fault", action="append", default=[], metavar="SPEC", help="inject a fault")
    p.add_argument(
        "--images",
        default="check",
        metavar="check|create|virtual",
        help="how disk images are opened (default: check, CHV's)",
    )
    p.add_argument("--image-root", metavar="DIR", help="the images of --images create")
    return p


def _parse_images(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from fakechv.images import MODES, Images

    if args.images not in MODES:
        raise CliError(f"--images {args.images!r}: expected one of {', '.join(MODES)}")
    if args.images == "create" and not args.image_root:
        raise CliError("--images create needs --image-root DIR")
    if args.image_root and args.images != "create":
        raise CliError("--image-root is only for --images create")
    return Images(args.images, root=Path(args.image_root) if args.image_root else None)


def parse_api_socket(value: str) -> tuple[str | None, int | None]:
    """``path=P`` / ``fd=N`` / bare ``P`` -> (path, fd), as CHV reads it."""
    if value.startswith("fd="):
        raw = value[3:]
        try:
            fd = int(raw)
        except ValueError:
            raise CliError(f"--api-socket fd={raw!r}: not a number") from None
        if fd < 0:
            raise CliError(f"--api-socket fd={fd}: not a valid descriptor")
        return None, fd
    if value.startswith("path="):
        value = value[5:]
    if not value:
        raise CliError("--api-socket: empty path")
    return value, None


def _parse_eject(args: argparse.Namespace) -> Any:
    """The ``EjectPolicy`` for ``Vmm`` (``None``: the default, immediate eject)."""
    from fakechv.vmm import EjectPolicy

    if args.eject is not None:
        if args.eject not in ("never", "immediate", "realistic"):
            raise CliError(f"--eject {args.eject!r}: expected 'never', 'immediate' or 'realistic'")
        return EjectPolicy(mode=args.eject)
    if args.eject_delay_ms is not None:
        try:
            ms = int(args.eject_delay_ms)
        except ValueError:
            raise CliError(
                f"--eject-delay-ms {args.eject_delay_ms!r}: not a whole number of milliseconds"
            ) from None
        if ms < 0:
            raise CliError(f"--eject-delay-ms {args.eject_delay_ms!r}: must be >= 0")
        return EjectPolicy(mode="delay", delay_ms=ms)
    return None


def _setup_logging(verbose: int, log_file: str | None) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("fakechv[%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp").setLevel(max(level, logging.WARNING))


def _load_profile(profiles: Any, args: argparse.Namespace, profile_env: str) -> Any:
    """The profile named by --profile, else $FAKECHV_PROFILE, else the default."""
    name = args.profile
    source = "--profile"
    if name is None:
        env_value = os.environ.get(profile_env)
        name = env_value or getattr(profiles, "DEFAULT_PROFILE", DEFAULT_PROFILE)
        source = f"${profile_env}" if env_value else "default profile"
    try:
        return profiles.get_profile(name)
    except (ValueError, KeyError) as exc:
        raise CliError(f"{source} {name!r}: {exc}") from None


async def _run(
    profile: Any,
    api_path: str | None,
    api_fd: int | None,
    monitor: Any,
    eject: Any,
    faults: list[Any],
    images: Any = None,
) -> int:
    from fakechv.api import Api
    from fakechv.server import serve_forever, server_options, start_server
    from fakechv.vmm import Vmm

    def sink(event: dict[str, Any]) -> None:
        log.info(
            "event %s/%s %s", event.get("source"), event.get("event"), event.get("properties") or ""
        )
        if monitor is not None:
            try:
                monitor.emit(event)
            except Exception:  # the event stream must never fail an API call
                log.exception(
                    "event monitor: event %s/%s dropped", event.get("source"), event.get("event")
                )

    from fakechv.vcpus import VcpuThreads

    vmm = Vmm(profile, event_sink=sink, eject=eject, images=images)
    vcpus = VcpuThreads()
    api = Api(vmm, faults=faults, vcpu_threads=vcpus)
    vmm.emit("vmm", "starting")
    try:
        server = await start_server(api, path=api_path, fd=api_fd, **server_options(profile.name))
    except OSError as exc:
        message = exc.strerror if exc.strerror and not exc.filename else str(exc)
        print(f"fakechv: error: cannot serve the API: {message}", file=sys.stderr)
        return 1
    try:
        reason = await serve_forever(server)
    finally:
        vmm.held_fds.close_all()
        vcpus.close()
    log.info("stopping (%s)", reason)
    return int(getattr(api, "exit_code", 0))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fakechv`` and ``cloud-hypervisor``; returns the exit code."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if argv is None else "fakechv"
    if prog in ("__main__.py", "-m", "-c", ""):
        prog = "fakechv"
    parser = build_parser(prog)
    split = split_chv_args(args_in)
    args = parser.parse_args(split.own)
    try:
        from fakechv import profiles
    except ImportError as exc:
        print(f"{prog}: error: fakechv core is missing: {exc}", file=sys.stderr)
        return 1
    profile_env = getattr(profiles, "PROFILE_ENV", PROFILE_ENV_DEFAULT)
    monitor = None
    try:
        _setup_logging(args.verbose, args.log_file)
        profile = _load_profile(profiles, args, profile_env)
        for group in split.ignored:
            log.warning("ignoring cloud-hypervisor option not emulated: %s", " ".join(group))
        if args.version:
            sys.stdout.write(profile.version_banner(verbose=args.verbose > 0))
            return 0
        if args.api_socket is None:
            raise CliError("--api-socket is required (fakechv is driven through its API)")
        api_path, api_fd = parse_api_socket(args.api_socket)
        eject = _parse_eject(args)
        faults = _parse_faults(args.fault, profile)
        images = _parse_images(args)
        if args.event_monitor is not None:
            from fakechv.events import open_event_monitor

            try:
                monitor = open_event_monitor(args.event_monitor)
            except ValueError as exc:
                raise CliError(str(exc)) from None
    except CliError as exc:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    try:
        import fakechv.api
        import fakechv.vmm  # noqa: F401
    except ImportError as exc:
        print(f"{prog}: error: fakechv core is missing: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_run(profile, api_path, api_fd, monitor, eject, faults, images))
    except KeyboardInterrupt:
        return 0
    finally:
        if monitor is not None:
            monitor.close()
        with contextlib.suppress(Exception):
            logging.shutdown()


def _parse_faults(specs: list[str], profile: Any = None) -> list[Any]:
    if not specs:
        return []
    try:
        from fakechv.faults import parse_fault_spec
    except ImportError:
        raise CliError("--fault: fault injection is not available in this build") from None

    out = []
    for spec in specs:
        try:
            rule = parse_fault_spec(spec)
        except ValueError as exc:
            raise CliError(f"--fault {spec!r}: {exc}") from None
        routes = getattr(profile, "routes", None)
        if routes and rule.endpoint not in routes:
            import difflib

            near = difflib.get_close_matches(rule.endpoint, list(routes), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise CliError(
                f"--fault {spec!r}: {rule.endpoint!r} is not an endpoint of CHV "
                f"{profile.name}{hint}; the syntax is ENDPOINT[:COUNT[:STATUS]], "
                "e.g. vm.add-disk:1 or vm.add-net:2:500"
            )
        out.append(rule)
    return out
