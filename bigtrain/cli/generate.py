"""`bigtrain generate RUN|CKPT|EXPORT`: image grids, style mixing and interpolation videos."""
from __future__ import annotations

import os


def run(args) -> int:
    import torch

    from bigtrain.distributed import print0
    from bigtrain.export.load import load_any_generator
    from bigtrain.models.sampling import (generate_images, interpolation_frames, parse_layers, parse_seeds,
                                          standing_stats, style_mix_grid)

    if not args.out and not args.outdir:
        raise ValueError("give --out GRID.png and/or --outdir DIR")
    if args.style_mix and args.interp:
        raise ValueError("--style-mix and --interp make different pictures; give one")
    seeds = parse_seeds(args.seeds)
    G, info = load_any_generator(args.checkpoint, args.device)
    trunc = args.trunc
    if args.no_trunc:
        if trunc is not None:
            raise ValueError("--trunc and --no-trunc contradict each other; give one")
    elif trunc is None and (info.get("truncation") or {}).get("default") is not None:
        trunc = info["truncation"]["default"]  # the export's own default (bigtrain export --trunc)
        print0(f"truncation {trunc} (the export's default; --trunc overrides it)")
    if args.standing_stats:
        standing_stats(G, args.standing_stats, args.batch, args.device)
    grid_w = None
    if args.style_mix:
        cols = parse_seeds(args.style_mix)
        layers = parse_layers(args.mix_layers, G)
        img = style_mix_grid(G, seeds, cols, layers, trunc, args.class_idx, args.batch, args.device)
        names = ["blank"] + [f"col-seed{c:04d}" for c in cols]
        names += [n for r in seeds for n in [f"row-seed{r:04d}"] + [f"mix-row{r:04d}-col{c:04d}" for c in cols]]
        grid_w = len(cols) + 1
    elif args.interp:
        img = interpolation_frames(G, seeds, args.interp, trunc, args.class_idx, args.batch, args.device)
        names = [f"frame{i:04d}" for i in range(len(img))]
        grid_w = args.interp
    elif args.all_classes:
        if not G.c_dim or args.class_idx is not None:
            raise ValueError("--all-classes is for conditional models, without --class")
        img = torch.cat([generate_images(G, seeds, trunc=trunc, class_idx=k, batch=args.batch, device=args.device)
                         for k in range(G.c_dim)])
        names = [f"class{k}-seed{s:04d}" for k in range(G.c_dim) for s in seeds]
        grid_w = len(seeds)
    else:
        img = generate_images(G, seeds, trunc=trunc, class_idx=args.class_idx, batch=args.batch,
                              device=args.device)
        names = [f"seed{s:04d}" for s in seeds]
        # Conditional models without --class cycle through the classes: one column per class.
        grid_w = G.c_dim if (G.c_dim and args.class_idx is None) else None
    for p in write_outputs(img, names, args.out, args.outdir, grid_w)[:3]:
        print0(f"wrote {p}")
    if args.outdir:
        print0(f"wrote {len(names)} images to {args.outdir}")
    return 0


def write_outputs(img, names: list[str], out: str | None, outdir: str | None,
                  grid_w: int | None = None) -> list[str]:
    """The grid (``out``) and/or one PNG per image named ``names[i]``.png in ``outdir``."""
    from bigtrain.train.observe import image_grid, save_png

    written = []
    if out:
        save_png(image_grid(img, grid_w), out)
        written.append(out)
    if outdir:
        os.makedirs(outdir, exist_ok=True)
        for name, im in zip(names, img):
            p = os.path.join(outdir, f"{name}.png")
            save_png(image_grid(im[None], 1), p)
            written.append(p)
    return written


def add(sub) -> None:
    g = sub.add_parser("generate", help="write images from an export or a checkpoint's G_ema")
    g.add_argument("checkpoint", help="export folder (bigtrain export), training checkpoint (ckpt-*.pt, best.pt) or run directory")
    g.add_argument("--seeds", default="0-63", help="e.g. 0-63 or 1,5,9 (default 0-63)")
    g.add_argument("--trunc", type=float, default=None,
                   help="truncation trick (default none): StyleGAN2 psi in [0, 1], 0.7 trades variety for quality; "
                        "BigGAN threshold t, z truncated to [-t, t] (e.g. 0.5); ProGAN has none")
    g.add_argument("--no-trunc", action="store_true",
                   help="no truncation, even when the export records a default (bigtrain export --trunc)")
    g.add_argument("--class", dest="class_idx", type=int, default=None, help="class index for conditional models (default: the i-th seed listed gets class i mod classes, a column per class)")
    g.add_argument("--all-classes", action="store_true",
                   help="conditional models: every seed in every class, one row per class (the seeds as columns)")
    g.add_argument("--standing-stats", type=int, default=0, metavar="N",
                   help="batch-norm generators (BigGAN): re-estimate BN statistics over N batches first")
    g.add_argument("--style-mix", metavar="COL_SEEDS",
                   help="StyleGAN2: style-mixing grid, --seeds as rows and these seeds as columns; each cell is its "
                        "column's image with the --mix-layers styles of its row")
    g.add_argument("--mix-layers", default="0-3",
                   help="w layers a row gives in --style-mix (default 0-3, the coarse ones: pose and shape)")
    g.add_argument("--interp", type=int, default=0, metavar="STEPS",
                   help="StyleGAN2: latent walk in w through --seeds, STEPS frames from each seed to the next")
    g.add_argument("--out", help="PNG grid path")
    g.add_argument("--outdir", help="folder for one PNG per seed")
    g.add_argument("--batch", type=int, default=32)
    g.add_argument("--device", default="cpu")
    g.set_defaults(fn=run)
