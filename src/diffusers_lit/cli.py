"""`diffusers-lit`: the command line of diffusers_lit.

Parsing imports nothing heavy (the choices are plain data), so that `--help` and a mistyped option answer at once;
each command imports torch, diffusers and the package's models when it runs.
"""

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .benchmarking.options import add_bench_arguments
from .choices import (
    CHECKPOINT_WEIGHTS,
    INHERIT,
    LINEAR_ATTENTION_BACKENDS,
    SAMPLE_LAYOUTS,
    SCHEDULERS,
    block_list,
    finite_float,
)
from .files import atomic_path, check_output_path, folder_hash, write_atomically

if TYPE_CHECKING:
    from collections.abc import Callable


def demo(args: argparse.Namespace) -> None:
    """The embedded default end to end: convert the Fashion-MNIST teacher, distil, sample both, score."""
    from .demo import run_demo

    run_demo(
        args.output_dir,
        distill_steps=args.distill_steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        num_samples=args.num_samples,
        sample_steps=args.sample_steps,
        scheduler=args.scheduler,
        seed=args.seed,
        num_prompts=args.num_prompts,
    )


def check_image_path(path: str, flag: str) -> None:
    """Refuse, before any work, an image path PIL cannot write (its extension) or that is not free to write."""
    from PIL import Image

    check_output_path(path)
    if Path(path).suffix.lower() not in Image.registered_extensions():
        raise ValueError(f"{flag} {path}: name an image file PIL can write, e.g. grid.png.")


def sample(args: argparse.Namespace) -> None:
    """Generate images with a LiT pipeline and write them as a labelled grid."""
    if (args.class_labels is None) == (args.prompt is None):  # checked before the heavy imports
        raise ValueError("give either --class-labels or --prompt (one of them).")
    check_image_path(args.output, "--output")
    from .evaluation import check_finite_images, image_grid, tensor_to_pil
    from .pipelines import LiTPipeline, LiTTextToImagePipeline, scheduler_from_name

    pipe = LiTPipeline.from_pretrained(args.model)
    if args.scheduler:
        pipe.scheduler = scheduler_from_name(args.scheduler, pipe.scheduler.config)
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    size = {"height": args.height, "width": args.width, "output_type": "pt"}
    if isinstance(pipe, LiTTextToImagePipeline):
        if args.prompt is None:
            raise ValueError(f"{args.model} is a text-to-image pipeline: give --prompt, not --class-labels.")
        images = pipe(
            list(args.prompt),
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            generator=generator,
            **{key: value for key, value in size.items() if value},
        ).images
        labels = list(args.prompt)
    else:
        if args.class_labels is None:
            raise ValueError(f"{args.model} is a class-conditional pipeline: give --class-labels, not --prompt.")
        class_labels = [int(label) if label.isdigit() else label for label in args.class_labels]
        images = pipe(
            class_labels,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            generator=generator,
            **size,
        ).images
        labels = [str(label) for label in class_labels]
    check_finite_images(images)
    images = tensor_to_pil(images)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(pipe, LiTTextToImagePipeline):  # one prompt a row, enlarged so that the prompt fits above it
        grid = image_grid(images, labels, columns=1, scale=4 if max(images[0].size) < 128 else 1)
    else:
        grid = image_grid(images, labels)
    with atomic_path(output, suffix=output.suffix) as tmp:
        grid.save(tmp)
    print(f"Wrote {len(images)} images to {output}")


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `diffusers-lit convert` (also used by examples/convert_to_lit.py)."""
    parser.add_argument("source", help="Hub repo id, diffusers folder, or original .pt / .pth / .safetensors file")
    parser.add_argument("output_dir", help="the LiT pipeline folder to write")
    parser.add_argument("--linear-attention-heads", type=int, help="default: max(2, teacher heads // 4)")
    parser.add_argument("--dwc-kernel-size", type=int, default=5)
    parser.add_argument(
        "--inherit",
        choices=list(INHERIT),
        default="none",
        help="self-attention projections to copy instead of starting fresh",
    )
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="default: the source's")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the finished folder")
    parser.add_argument("--components", help="pipeline to take VAE, scheduler and text encoder from (for .pt files)")
    parser.add_argument("--num-attention-heads", type=int, help="teacher heads, for .pt files of unusual widths")
    parser.add_argument("--sample-size", type=int, help="sample size, for original checkpoints without pos_embed")
    parser.add_argument(
        "--checkpoint-weights",
        choices=list(CHECKPOINT_WEIGHTS),
        default="ema",
        help="weights of a training checkpoint ({model, ema, ...}, as DiT's train.py writes) to convert",
    )
    parser.add_argument(
        "--timestep-freq-shift",
        type=finite_float,
        help="timestep embedding frequency shift (default: the "
        "source's; 0 for original DiT .pt files, 1 for diffusers DiT folders)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh self-attention")
    parser.add_argument(
        "--softmax-blocks",
        type=block_list,
        default=(),
        metavar="I,J",
        help="blocks that keep the teacher's softmax self-attention (a hybrid LiT), e.g. 0,5",
    )
    parser.add_argument("--revision")


def convert(args: argparse.Namespace) -> None:
    """Convert a DiT / PixArt checkpoint into a LiT pipeline folder and summarise the report."""
    from .conversion import convert_to_lit

    output = convert_to_lit(
        args.source,
        args.output_dir,
        linear_attention_heads=args.linear_attention_heads,
        dwc_kernel_size=args.dwc_kernel_size,
        inherit=args.inherit,
        dtype=args.dtype,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        components=args.components,
        num_attention_heads=args.num_attention_heads,
        sample_size=args.sample_size,
        checkpoint_weights=args.checkpoint_weights,
        timestep_freq_shift=args.timestep_freq_shift,
        seed=args.seed,
        softmax_blocks=args.softmax_blocks,
        revision=args.revision,
    )
    report = json.loads((output / "conversion_report.json").read_text())
    weights = f", its {report['source_weights']!r} weights" if report["source_weights"] else ""
    print(
        f"Converted {report['source']} ({report['layout']}{weights}) into {output}: "
        f"{report['copied']['count']} tensors copied, {report['fresh']['count']} fresh, "
        f"{report['unused']['count']} left out; parameters "
        f"{report['parameters']['source']:,} -> {report['parameters']['lit']:,}."
    )


def _prompts(source: str, count: int) -> list[str]:
    """`count` prompts: the captions of the test scenes ("scenes"), or the lines of a text file."""
    if source == "scenes":
        from .scenes import scene_prompts

        return scene_prompts(count)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"--prompts {source}: no such file (give 'scenes' or a text file, one prompt a line).")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts {source} holds no prompts: write one prompt per line.")
    return [prompts[i % len(prompts)] for i in range(count)]  # repeated in turn up to the sample count


def _sampler(args: argparse.Namespace, num_samples: int, device: str) -> "Callable[[range], tuple]":
    """`sample(indices)` of `args.model` as `generate` / `evaluate` ask: samples `indices` of the seeded sequence
    as 8-bit images, labels (class ids, or the scene items of the prompts), and the settings, model, class names
    or prompts."""
    from .evaluation import quantize, sample_for_evaluation
    from .models.linear_attention import check_backend
    from .pipelines import LiTPipeline, LiTTextToImagePipeline, scheduler_from_name

    check_backend(args.linear_attention_backend, device)
    pipe = LiTPipeline.from_pretrained(args.model)
    if args.scheduler:
        pipe.scheduler = scheduler_from_name(args.scheduler, pipe.scheduler.config)
    if args.linear_attention_backend != "torch":
        if not hasattr(pipe.transformer, "set_linear_attention_backend"):
            raise ValueError(
                f"--linear-attention-backend needs a LiT transformer; {args.model} has a "
                f"{type(pipe.transformer).__name__}."
            )
        pipe.transformer.set_linear_attention_backend(args.linear_attention_backend)
    text_to_image = isinstance(pipe, LiTTextToImagePipeline)
    prompts = _prompts(args.prompts, num_samples) if text_to_image else None
    pipe.to(device)
    compiled = "no"
    if args.compile:
        from .compilation import compile_transformer

        compiled = compile_transformer(pipe.transformer, device)

    def sample(indices: range) -> tuple:
        images, labels, info = sample_for_evaluation(
            pipe,
            len(indices),
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            batch_size=args.batch_size,
            seed=args.seed,
            prompts=prompts,
            start=indices.start,
        )
        info = {"model": args.model, **info, "linear_attention_backend": args.linear_attention_backend}
        info["compile"] = compiled
        if not text_to_image:
            info["id2label"] = pipe.config.id2label
        return quantize(images), labels, info

    return sample


def _device(args: argparse.Namespace) -> str:
    """`--device`, or cuda where PyTorch sees a GPU, else cpu (imports torch: call it after the cheap checks)."""
    from .hardware import default_device

    return args.device or default_device()


def model_hash(model: str) -> str:
    """`folder_hash` of a pipeline folder, or of a Hub id's snapshot in the cache (loaded there already)."""
    from .hub import resolve_pretrained_folder

    return folder_hash(resolve_pretrained_folder(model, local_files_only=True))


def _draw(args: argparse.Namespace, num_samples: int, output: str, layout: str = "diffusers_lit") -> dict | None:
    """Sample `args.model` into the samples file `output`, shared out over the processes of `accelerate launch` (or
    one) in resumable shards (`sharded_sampling`). Returns the merged file's info on the main process, else None."""
    from .sharded_sampling import process_state, sample_in_shards

    state = process_state()
    device = str(state.device) if state.use_distributed else _device(args)
    sampler = _sampler(args, num_samples, device)
    settings = {  # what changes the images: shards of a run with other settings are refused, not mixed
        key: getattr(args, key)
        for key in (
            "steps",
            "guidance_scale",
            "scheduler",
            "seed",
            "prompts",
            "linear_attention_backend",
            "compile",
        )
    }
    settings["model"] = model_hash(args.model)  # by content: a model replaced at the same path is another model
    return sample_in_shards(sampler, num_samples, output, settings, shard_size=args.shard_size, layout=layout)


def generate(args: argparse.Namespace) -> None:
    """Sample a pipeline into a .npz file (8-bit images, labels, settings and prompts), to score later; under
    `accelerate launch` the samples are shared out over the processes."""
    if not args.output.endswith(".npz"):  # checked before the heavy imports
        raise ValueError(f"--output must name a .npz file, got {args.output}.")
    if args.num_samples < 1 or args.shard_size < 1:
        raise ValueError("--num-samples and --shard-size must be at least 1.")
    check_output_path(args.output)
    info = _draw(args, args.num_samples, args.output, args.format)
    if info is not None:
        speed = f" ({info['seconds_per_image']:.4f} s / image)" if "seconds_per_image" in info else ""
        print(f"Wrote {args.num_samples} samples of {args.model} to {args.output}{speed}")


def evaluate(args: argparse.Namespace) -> None:
    """Score a pipeline's samples, or a samples file of `generate`: FID, precision, recall; for text-to-image
    samples of scene prompts also scene and object accuracy (prompt adherence). A pipeline is sampled as `generate`
    samples it (over the processes of `accelerate launch`, into `--samples`), then scored on the main process."""
    if args.samples is not None and not args.samples.endswith(".npz"):  # checked before the heavy imports
        raise ValueError(f"--samples must name a .npz file, got {args.samples}.")
    if args.num_samples is not None and args.num_samples < 2:
        raise ValueError(f"--num-samples must be at least 2 (an FID needs two images), got {args.num_samples}.")
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {args.shard_size}.")
    for path in (args.output, args.samples):
        if path:
            check_output_path(path)
    if args.grid:
        check_image_path(args.grid, "--grid")
    if args.model.endswith(".npz"):
        _score(args, args.model, args.num_samples)
        return
    from .sharded_sampling import process_state

    count = args.num_samples or 1000
    from .evaluation import check_fid_at, check_reference

    check_fid_at(args.fid_at or (), count, "--fid-at")
    if args.reference is not None:  # the defaults ship with the package; a dataset named is read before sampling
        check_reference(args.reference, args.split, count)
    if args.samples is not None:
        if _draw(args, count, args.samples) is not None:  # the main process scores
            _score(args, args.samples, count)
        return
    if process_state().num_processes > 1:
        raise ValueError(
            "Under accelerate launch the processes draw into one samples file they share: pass --samples FILE.npz."
        )
    with tempfile.TemporaryDirectory() as folder:
        _draw(args, count, str(Path(folder) / "samples.npz"))
        _score(args, str(Path(folder) / "samples.npz"), count)


def _score(args: argparse.Namespace, samples: str, num_samples: int | None) -> None:
    """Score the first `num_samples` (default all) of a samples file; print the results, write --output, --grid."""
    from .evaluation import load_samples, score_images

    device = _device(args)
    images, labels, info = load_samples(samples)
    if num_samples is not None:
        if num_samples > len(images):
            raise ValueError(f"{samples} holds {len(images)} samples, under --num-samples {num_samples}.")
        images, labels = images[:num_samples], labels[:num_samples]
        if "prompts" in info:
            info["prompts"] = info["prompts"][:num_samples]
    text_to_image = "prompts" in info
    reference = args.reference or ("fashion-mnist-scenes" if text_to_image else "fashion-mnist")
    results = score_images(
        images,
        reference=reference,
        split=args.split,
        fid_at=args.fid_at or (),
        cache_dir=args.cache_dir,
        device=device,
    )
    if text_to_image:
        import torch

        from .adherence import load_classifier, scene_adherence

        scored = [i for i, (left, _) in enumerate(labels) if left >= 0]
        if scored:
            left, right = (torch.tensor([labels[i][side] for i in scored]) for side in (0, 1))
            results.update(scene_adherence(load_classifier(args.classifier), images[scored], left, right))
    names = info.pop("id2label", None) or {}
    prompts = info.pop("prompts", None)
    results.update(info)
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(Path(args.output), json.dumps(results, indent=2) + "\n")
    if args.grid:
        from .evaluation import image_grid, tensor_to_pil

        captions = prompts[:64] if prompts else [names.get(str(label), str(label)) for label in labels[:64]]
        grid = image_grid(tensor_to_pil(images[:64].float() / 255), captions, scale=4 if prompts else 1)
        with atomic_path(args.grid, suffix=Path(args.grid).suffix) as tmp:
            grid.save(tmp)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """How `generate` and `evaluate` sample a model."""
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=finite_float, default=1.0)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS))
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="image i is drawn with seed + i")
    parser.add_argument("--device", help="default: cuda where PyTorch sees a GPU, else cpu")
    parser.add_argument("--shard-size", type=int, default=100, help="samples per resumable shard")
    parser.add_argument(
        "--prompts",
        default="scenes",
        help="text-to-image: 'scenes' (the test scenes' captions) or a text file, one prompt a line",
    )
    parser.add_argument(
        "--linear-attention-backend",
        choices=LINEAR_ATTENTION_BACKENDS,
        default="torch",
        help="LiT's self-attention: PyTorch operations, or fused Triton kernels (CUDA)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the transformer: with CUDA graphs (mode 'reduce-overhead') on CUDA, plain elsewhere",
    )


def bench(args: argparse.Namespace) -> None:
    """Time LiT against DiT, PixArt and Sana and write the results (docs/benchmarks.md)."""
    from .benchmarking.runs import bench_main

    bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusers-lit", description="LiT: a simple linear diffusion transformer")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("demo", help="run the whole chain on the embedded default, offline")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--distill-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64, help="distillation batch")
    p.add_argument("--lr", type=finite_float, default=1e-3, help="distillation learning rate (see docs/results.md)")
    p.add_argument("--num-samples", type=int, default=200, help="images per model for FID (and reference images)")
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="ddim")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-prompts", type=int, default=100, help="text-to-image prompts per model (and real scenes)")
    p.set_defaults(func=demo)

    p = commands.add_parser("sample", help="generate a labelled grid of images with a LiT pipeline")
    p.add_argument("model", help="a LiT pipeline folder or Hub repo id")
    p.add_argument("--class-labels", nargs="+", help="class ids or names, one image each")
    p.add_argument("--prompt", nargs="+", help="prompts, one image each")
    p.add_argument("--output", default="grid.png")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance-scale", type=finite_float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="replace the pipeline's scheduler")
    p.set_defaults(func=sample)

    p = commands.add_parser("generate", help="sample a pipeline into a .npz file, to score later")
    p.add_argument("model", help="a LiT (or DiT) pipeline folder or Hub repo id")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--output", required=True, help="the .npz file to write (8-bit images, labels, settings)")
    p.add_argument(
        "--format",
        choices=SAMPLE_LAYOUTS,
        default="diffusers_lit",
        help="diffusers_lit (images, labels, info) or adm (the ADM evaluation suite's arr_0 / arr_1 batch)",
    )
    add_sampling_arguments(p)
    p.set_defaults(func=generate)

    p = commands.add_parser("evaluate", help="FID, precision and recall of a pipeline's samples; scene adherence")
    p.add_argument("model", help="a LiT (or DiT) pipeline folder or Hub repo id, or a .npz file of `generate`")
    p.add_argument(
        "--reference",
        help="'fashion-mnist' (default for classes), 'fashion-mnist-scenes' (default for "
        "text), or a dataset name / folder",
    )
    p.add_argument("--classifier", help="text-to-image: the scene classifier (default assets/fmnist-classifier)")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--num-samples", type=int, help="generated images and reference images (default 1000, or all of a .npz file)"
    )
    p.add_argument("--fid-at", type=int, nargs="+", help="also the FID of the first n samples, for each n")
    p.add_argument("--cache-dir", help="reference features cache (default ~/.cache/diffusers_lit/fid)")
    p.add_argument("--output", help="write the results as JSON")
    p.add_argument("--grid", help="write the first 64 samples as a labelled PNG grid")
    p.add_argument(
        "--samples",
        help="a pipeline's samples are drawn into this .npz file, kept (resumable; needed under accelerate "
        "launch, which shares the sampling out); default a temporary file",
    )
    add_sampling_arguments(p)
    p.set_defaults(func=evaluate)

    p = commands.add_parser("convert", help="turn a DiT / PixArt checkpoint into a LiT pipeline folder")
    add_convert_arguments(p)
    p.set_defaults(func=convert)

    p = commands.add_parser("bench", help="speed and memory of LiT against DiT, PixArt and Sana (docs/benchmarks.md)")
    add_bench_arguments(p)
    p.set_defaults(func=bench)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run a command. A user's mistake (a bad value, a missing file or model, a refused input) prints
    `error: ...` and exits with status 2; `--debug` shows the traceback instead."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        if args.debug:
            raise
        parser.exit(2, f"error: {error}\n")
