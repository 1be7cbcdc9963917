"""``python -m rvqfast.studio RUN [--data default|PATH] [--port 8765]``: the studio web app."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rvqfast.studio",
        description="Browse, edit and export motions in the browser; the run's decoder.onnx runs in the page "
                    "(onnxruntime-web). Serves on 127.0.0.1 only unless --host says otherwise; opens nothing.")
    p.add_argument("run", help="training run folder (config.json + model.safetensors)")
    p.add_argument("--data", default="default",
                   help="'default' (embedded dataset), a HumanML3D-layout folder, or 'none' (uploads only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--cache", default=None, help="folder for the exported decoder (default RUN/studio_export)")
    p.add_argument("--max-motions", type=int, default=None, help="load at most this many dataset motions")
    p.add_argument("--verbose", action="store_true", help="log every request")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port: expected 0..65535, got {args.port}")

    import torch

    from .app import build_state
    from .server import make_server

    torch.set_num_threads(1)  # the server encodes one motion at a time; leave the cores to the browser
    print(f"rvqfast studio: loading {args.run} and exporting its decoder…", file=sys.stderr, flush=True)
    try:
        state = build_state(args.run, None if args.data == "none" else args.data, cache_dir=args.cache,
                            max_motions=args.max_motions)
        server = make_server(state, args.host, args.port, quiet=not args.verbose)
    except ImportError as e:
        print(f"error: the studio exports the run with onnx ({e}); install it: pip install 'rvqfast[export]'",
              file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"rvqfast studio: http://{shown}:{port}/  (run {args.run}, {len(state.library.motions)} motions, "
          f"decoder {state.export_dir / 'decoder.onnx'}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
