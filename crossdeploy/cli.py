"""The `crossdeploy` command: `crossdeploy serve` serves the repository the pipeline's package stage built,
the deploy bundle (--bundle) or any variant (--variant);
`crossdeploy deploy` prints the deploy decision from the current metrics, for what-ifs without DVC."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crossdeploy.errors import CrossdeployError
from crossdeploy.params import load_params
from crossdeploy.serving import serve_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossdeploy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve the packaged model, the deploy bundle or any variant over TF Serving's REST (and gRPC) API"
    )
    serve_command.add_arguments(serve)
    which = serve.add_mutually_exclusive_group()
    which.add_argument(
        "--bundle",
        metavar="DIR",
        help="serve the deploy stage's bundle (models/deploy) with the runtime its decision chose: "
        "ONNX Runtime, OpenVINO, TFLite and torch files on the embedded server, a SavedModel as --repository is",
    )
    which.add_argument(
        "--variant",
        metavar="NAME",
        help="serve one of the pipeline's variants (onnxruntime-int8, openvino-int8, tflite-int8, ...) "
        "with its own runtime on the embedded server",
    )
    deploy = commands.add_parser("deploy", help="print the deploy decision (the deploy stage's) from the current metrics files")
    deploy.add_argument("--p99-ms", type=float, help="the latency SLO (default: deploy.p99_ms from the params)")
    deploy.add_argument("--variants", help="all, served, or a comma-separated list of variant names (default: deploy.variants)")
    deploy.add_argument("--min-top1-agreement", type=float, help="a stricter floor than the parity verdict (default: deploy's)")
    deploy.add_argument("--min-cosine", type=float, help="a stricter floor than the parity verdict (default: deploy's)")
    deploy.add_argument("--max-model-mb", type=float, help="the artifact size cap (default: deploy.max_model_mb)")
    deploy.add_argument("--json", action="store_true", help="print deploy.json's decision rather than the note")
    deploy.add_argument("--params", default="params.yaml", help="the pipeline's params (deploy settings, metrics paths)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return deploy(args) if args.command == "deploy" else serve(args)
    except CrossdeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def serve(args: argparse.Namespace) -> int:
    if not (args.bundle or args.variant):
        return serve_command.serve(args)
    from crossdeploy.deploy.serve_target import bundle_target, variant_target

    if args.variant and args.repository:
        raise CrossdeployError("--variant serves the pipeline's own file for that variant; give --variant or --repository, not both.")
    params = load_params(args.params)
    target = bundle_target(Path(args.bundle), params) if args.bundle else variant_target(args.variant, params)
    return serve_command.serve(args, target)


def deploy(args: argparse.Namespace) -> int:
    """The deploy stage's decision from the metrics files as they are, under the params and these overrides;
    nothing is written. An unmet SLO is printed, not an error (deploy.strict is the stage's)."""
    import json

    from crossdeploy.deploy.decision import Settings, decide, load_metrics
    from crossdeploy.deploy.note import deploy_markdown

    params = load_params(args.params)
    paths = params["paths"]
    variants = args.variants if args.variants in (None, "all", "served") else args.variants.split(",")
    settings = Settings.from_params(
        params.get("deploy"),
        strict=False,
        p99_ms=args.p99_ms,
        variants=variants,
        min_top1_agreement=args.min_top1_agreement,
        min_cosine=args.min_cosine,
        max_model_mb=args.max_model_mb,
    )
    decision = decide(load_metrics(paths["benchmark_metrics"]), load_metrics(paths["parity"]), settings)
    print(json.dumps(decision, indent=2) if args.json else deploy_markdown(decision), end="\n" if args.json else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
