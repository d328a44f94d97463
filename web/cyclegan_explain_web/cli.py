"""``cyclegan-explain-web``: open a CT in the web viewer and explain the points clicked in it.

The viewer's own command, so that the core's command line never imports a front end. trame is
imported only after the arguments are read, so a missing 'web' extra is one clear message.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from CycleGANExplainLib.bundle_trust import ALLOW_FLAG, ALLOW_HELP
from CycleGANExplainLib.inference_threads import prefer_passive_openmp
from CycleGANExplainLib.model_bundle import (DEVICE_CHOICES, BundleError, bundle_option_help, check_trust,
                                             read_metadata, resolve_bundle)
from CycleGANExplainLib.notices import RESEARCH_NOTICE
from CycleGANExplainLib.volume_io import DEFAULT_MAX_VOXELS

EXIT_BAD_INPUT = 2
DEFAULT_MAX_UPLOAD_MB = 1024.0


def port_number(text: str) -> int:
    """--port's type: a TCP port, 0 for a free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def address_problem(host: str, port: int) -> Optional[str]:
    """Why the viewer could not listen on ``host``:``port``, or None; asked before the viewer is
    built (which takes seconds) with the socket options aiohttp uses. The server's own start
    reports a port taken in the moment between."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        return f"cannot listen on {host!r}: not an address of this machine ({error})"
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            if sys.platform != "win32":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                return listen_problem(host, port, error)
    return None


def listen_problem(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use; choose another with --port (0: any free port)"
    if error.errno == errno.EACCES:
        return f"not allowed to listen on port {port} (ports below 1024 need privileges); choose another with --port"
    return f"cannot listen on {host}:{port}: {error.strerror or error}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cyclegan-explain-web",
        description="Serve Slicer's slice views to a browser (trame-slicer; needs the 'web' extra). Click a "
        "nodule to see R = G+(x) - G-(x) over the CT. Opens the bundled synthetic sample CT when no "
        "volume is given. " + RESEARCH_NOTICE,
    )
    parser.add_argument("volume", type=Path, nargs="?", default=None,
                        help="CT volume: NRRD, NIfTI, MHA file or a DICOM series folder (default: the sample CT)")
    parser.add_argument("--port", type=port_number, default=0, help="port to listen on (default 0: a free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="default: CUDA if available")
    parser.add_argument("--bundle", default=None, metavar="NAME|PATH", help=bundle_option_help())
    parser.add_argument(ALLOW_FLAG, action="store_true", dest="allow_unknown_bundle", help=ALLOW_HELP)
    parser.add_argument("--max-voxels", type=int, default=DEFAULT_MAX_VOXELS, metavar="N",
                        help=f"refuse a volume whose header declares more voxels (default {DEFAULT_MAX_VOXELS:,})")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                        help=f"largest upload, and largest unpacked .zip, accepted (default {DEFAULT_MAX_UPLOAD_MB:g} MB)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show the viewer's debug log and the third-party warnings hidden by default "
                             "(VTK 9.6's WindowResizeEvent deprecation notice, caused by trame-slicer's views)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve the web viewer until interrupted; the URL is printed on stdout."""
    prefer_passive_openmp()  # before anything imports torch
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.verbose:
        # The project's own log; trame's and wslink's would fill the terminal at INFO level.
        for name in (__package__, "CycleGANExplainLib"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        warnings.simplefilter("default")  # Python's warnings too, those the default filters hide included
    try:  # after the arguments: --help works without the extra
        from .viewer import serve
        from .volume_upload import UploadLimits
    except ModuleNotFoundError as error:
        print(f"error: the web viewer needs trame-slicer ({error}); install it with: "
              "pip install 'cyclegan-explain[web]'", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        bundle_dir = resolve_bundle(args.bundle)
        trust_warning = check_trust(bundle_dir, args.allow_unknown_bundle)  # refused now, not at the first click
        read_metadata(bundle_dir)  # an allowed bundle's metadata is checked too, before the viewer is built
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    problem = address_problem(args.host, args.port)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if trust_warning:
        print(f"warning: {trust_warning}", file=sys.stderr)
    limits = UploadLimits(max_upload_bytes=int(args.max_upload_mb * 1e6), max_voxels=args.max_voxels)
    try:
        serve(args.volume, port=args.port, host=args.host, device=args.device, bundle_dir=bundle_dir,
              allow_unknown_bundle=args.allow_unknown_bundle, limits=limits, verbose=args.verbose)
    except OSError as error:  # the port taken after address_problem looked
        if error.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        print(f"error: {listen_problem(args.host, args.port, error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
