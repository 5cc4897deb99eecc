"""The ``ggcam`` command (also ``python -m ggcam``): one program, a subcommand per job.

    ggcam explain --image=cat.jpg --label=282      # python inference.py, in a clone
    ggcam layers --graph=frozen.pb                  # explain --list_layers
    ggcam evaluate --image=images                   # python evaluate.py
    ggcam weights --model=resnet_v1_50              # python weights.py
    ggcam beam --image=photos/ --runner=...         # python beam_explain.py

``ggcam COMMAND --help`` lists a command's flags; none of this loads TensorFlow.
"""
import importlib
import sys
from typing import List, Optional

COMMANDS = {  # name -> (module, what it does)
    "explain": ("ggcam.cli.explain", "explain images: Grad-CAM, guided backprop, Guided Grad-CAM pictures"),
    "layers": ("ggcam.cli.explain", "list a model's candidate layers with their shapes (explain --list_layers)"),
    "evaluate": ("ggcam.cli.evaluate", "sanity checks and faithfulness scores of the explanations"),
    "weights": ("ggcam.cli.weights", "fetch, check and install a zoo network's checkpoint"),
    "beam": ("ggcam.cli.beam", "explain datasets with Apache Beam"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    return "usage: ggcam COMMAND [flags]   (ggcam COMMAND --help for its flags)\n\ncommands:\n" + "".join(
        "  %-*s  %s\n" % (width, name, what) for name, (_, what) in COMMANDS.items())


def main(argv: Optional[List[str]] = None) -> int:
    """``ggcam COMMAND [flags]``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print("error: unknown command %r (one of %s; see ggcam --help)" % (name, ", ".join(COMMANDS)), file=sys.stderr)
        return 2
    sys.argv[0] = "ggcam %s" % name  # argparse's usage lines name the subcommand
    module = importlib.import_module(COMMANDS[name][0])
    if name == "layers":
        rest = ["--list_layers"] + rest
    if name in ("explain", "layers"):
        return module.main(rest, quick_start=True)
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
