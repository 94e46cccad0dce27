"""`bigtrain pack SRC OUT_DIR`: images into WebDataset tar shards and dataset.json."""
from __future__ import annotations


def run(args) -> int:
    from bigtrain.data.pack import PackOptions, describe, pack
    opts = PackOptions(resolution=args.resolution, shard_size=args.shard_size, fmt=args.format, labels=args.labels,
                       workers=args.workers, channels=args.channels, fit=args.fit, quality=args.quality,
                       prefix=args.prefix, split=args.split, seed=args.seed, max_images=args.max_images,
                       classes=args.classes.split(",") if args.classes else None)
    manifest = pack(args.src, args.out_dir, opts, progress=not args.quiet)
    print(describe(manifest, args.out_dir))
    return 0


def add(sub) -> None:
    k = sub.add_parser("pack", help="pack images into WebDataset tar shards + dataset.json")
    k.add_argument("src", help="folder of images (recursive), .zip, .npz (uint8 'x', 'y'), or IDX folder/file")
    k.add_argument("out_dir", help="output folder for NAME-000000.tar ... and dataset.json")
    k.add_argument("--resolution", type=int, required=True, help="square output size (power of two)")
    k.add_argument("--shard-size", type=int, default=5000, help="samples per shard (default 5000)")
    k.add_argument("--format", default="png", choices=["png", "jpg", "webp", "raw"],
                   help="image encoding; raw = uint8 .npy (largest, fastest to read)")
    k.add_argument("--labels", default="auto",
                   help="auto (subfolder names of folders/zips; IDX/npz labels), none, or a CSV 'path,label' / "
                        "JSON {path: label} file with paths relative to SRC")
    k.add_argument("--workers", type=int, default=1, help="parallel processes, one shard each at a time")
    k.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="force 1 (grayscale) or 3 (RGB); default: grayscale sources stay 1 channel")
    k.add_argument("--fit", default="resize", choices=["resize", "pad"],
                   help="resize: centre crop + Lanczos (default); pad: centre smaller images on black")
    k.add_argument("--quality", type=int, default=95, help="jpg/webp quality")
    k.add_argument("--prefix", default="train", help="shard name prefix (default train)")
    k.add_argument("--split", default="train", help="IDX folders: train or t10k")
    k.add_argument("--seed", type=int, default=0, help="shuffles samples across shards; -1 keeps source order")
    k.add_argument("--max-images", type=int, default=None,
                   help="pack only the first N source images (of the --classes chosen)")
    k.add_argument("--classes", help="comma-separated class names or indices: pack only images of these classes "
                                     "(labelled sources; indices and names stay the source's)")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(fn=run)
