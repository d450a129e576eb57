"""Stage (d): the weights of `--config` (OUT/weights.npz for x234, see `train_run.weights_name`) on the packed Set5/Set14 at ×2/×3/×4 under the MATLAB protocol, with the
vdsr_jax functions `vdsr-evaluate` uses (`data.load_folder`, `protocol.evaluate_sets`), float32 at matmul precision 'highest'
so the GPU's figures are the CPU's; the table is written into the weights' provenance (`evaluation`) and
into WORK/eval_<config>.json."""
import time

from benchmarks.gpu.common import PAPER, PYTORCH_VDSR, log, stage_args, write_json


def main(argv=None) -> int:
    import jax

    from vdsr_jax import pretrained
    from vdsr_jax.data import load_folder
    from vdsr_jax.inference import TiledVDSR
    from vdsr_jax.protocol import evaluate_sets

    from benchmarks.gpu.train_run import weights_name

    args = stage_args(argv)
    s = args.settings
    start = time.time()
    weights = args.out / weights_name(args.config)
    out_json = args.work / f"eval_{args.config}.json"
    model, params = pretrained.load_pretrained(weights)
    result = {"weights": str(weights), "rows": [], "skipped": []}
    with jax.default_matmul_precision("highest"):
        net = TiledVDSR(model, params)
        for name in s["eval_sets"]:
            if time.time() > args.until:
                result["skipped"].append(name)
                continue
            images = load_folder(args.pack / "benchmarks" / name, s["eval_scales"])
            images = images[: s["eval_images"]] if s["eval_images"] else images
            rows = evaluate_sets(net, {name: images}, s["eval_scales"], show_progress=False)
            for row in rows:
                row["paper_psnr"] = PAPER.get(name, {}).get(row["scale"])
                row["pytorch_vdsr_psnr"] = PYTORCH_VDSR.get(name, {}).get(row["scale"])
                row["config"] = args.config
                log("eval", f"{args.config} {name} ×{row['scale']}: VDSR {row['vdsr_psnr']:.2f} dB / {row['vdsr_ssim']:.4f} "
                            f"(bicubic {row['bicubic_psnr']:.2f}; paper {row['paper_psnr']}) {row['seconds']:.1f} s")
            result["rows"] += rows
            write_json(out_json, result)
    meta = pretrained.pretrained_info(weights)
    provenance = {**meta["provenance"], "evaluation": result["rows"],
                  "evaluation_protocol": "vdsr_jax.protocol (MATLAB protocol: Y of rgb2ycbcr, bicubic down/up in "
                                         "float64, scale px shaved), float32 at matmul precision 'highest'"}
    pretrained.export_pretrained(params, model, weights, provenance)
    result["seconds"] = time.time() - start
    write_json(out_json, result)
    return 0 if not result["skipped"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
