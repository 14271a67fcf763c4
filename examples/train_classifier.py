#!/usr/bin/env python
"""Train the Fashion-MNIST classifier that scores prompt adherence on scenes (`diffusers-lit evaluate`).

    python examples/train_classifier.py --output_dir assets/fmnist-classifier

A small CNN (`diffusers_lit.adherence.FashionClassifier`) on the train split, items placed in 32x32 halves as
scenes place them; prints and saves its test accuracy beside the weights (config.json, safetensors).
"""

import argparse
import json
from pathlib import Path

from diffusers_lit.adherence import CLASSIFIER_EPOCHS, train_classifier
from diffusers_lit.choices import finite_float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--epochs", type=int, default=CLASSIFIER_EPOCHS)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=finite_float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    output = Path(args.output_dir)
    if output.exists() and any(output.iterdir()):
        parser.error(f"--output_dir {output} is not empty: choose another folder, or remove it first.")
    try:
        model, info = train_classifier(args.epochs, args.batch_size, args.learning_rate, args.seed)
    except ValueError as error:
        parser.error(str(error))
    model.save_pretrained(output)
    (output / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"Test accuracy {info['test_accuracy']:.4f}; saved to {output}")


if __name__ == "__main__":
    main()
