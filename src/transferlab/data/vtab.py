"""VTAB-1k (Zhai et al. 2019) in the file layout NOAH, V-PETL Bench, PETL_Vision and SSF read: one folder per task
holding its images and four lists, ``train800.txt``, ``val200.txt``, ``train800val200.txt`` and ``test.txt``, each
line ``relative/path label``.

``train800`` / ``val200`` are the tuning split and ``train800val200`` / ``test`` the final one, so the datamodule's
usual switch does the VTAB rule: ``data.fit_on=train`` trains on the 800 and validates on the 200 (protocol=tuned's
tune stage), ``data.fit_on=train+val`` trains on all 1,000 (its refit stage). Any folder of tasks in this layout
(a user's own FGVC-style collection) reads the same way: a task that is not one of the 19 takes its class count
from its labels and the group "other".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transferlab.data.decoded_cache import DecodeCache
from transferlab.data.sources import SourceData, file_images
from transferlab.utils.errors import TransferlabError, suggest

LISTS = {"train": "train800.txt", "val": "val200.txt", "trainval": "train800val200.txt", "test": "test.txt"}
GROUPS = ("Natural", "Specialized", "Structured")


@dataclass(frozen=True)
class SuiteTask:
    """A task of a suite: its folder name, class count and group."""

    name: str
    num_classes: int
    group: str = "other"


# The 19 tasks, named as NOAH's and V-PETL Bench's vtab-1k/ folders name them (class counts from VTAB's task
# definitions); ALIASES maps other repositories' folder names onto them.
VTAB1K_TASKS: dict[str, SuiteTask] = {
    t.name: t
    for t in [
        SuiteTask("cifar", 100, "Natural"),
        SuiteTask("caltech101", 102, "Natural"),
        SuiteTask("dtd", 47, "Natural"),
        SuiteTask("oxford_flowers102", 102, "Natural"),
        SuiteTask("oxford_iiit_pet", 37, "Natural"),
        SuiteTask("svhn", 10, "Natural"),
        SuiteTask("sun397", 397, "Natural"),
        SuiteTask("patch_camelyon", 2, "Specialized"),
        SuiteTask("eurosat", 10, "Specialized"),
        SuiteTask("resisc45", 45, "Specialized"),
        SuiteTask("diabetic_retinopathy", 5, "Specialized"),
        SuiteTask("clevr_count", 8, "Structured"),
        SuiteTask("clevr_dist", 6, "Structured"),
        SuiteTask("dmlab", 6, "Structured"),
        SuiteTask("kitti", 4, "Structured"),
        SuiteTask("dsprites_loc", 16, "Structured"),
        SuiteTask("dsprites_ori", 16, "Structured"),
        SuiteTask("smallnorb_azi", 18, "Structured"),
        SuiteTask("smallnorb_ele", 9, "Structured"),
    ]
}
ALIASES = {"cifar100": "cifar", "cifar_100": "cifar", "flowers102": "oxford_flowers102", "pets": "oxford_iiit_pet"}


def suite_task(name: str, labels: list[int] | None = None) -> SuiteTask:
    """The registry's entry for ``name`` (or an alias), else a task of group "other" sized by its ``labels``."""
    name = ALIASES.get(name, name)
    if name in VTAB1K_TASKS:
        return VTAB1K_TASKS[name]
    return SuiteTask(name, max(labels) + 1 if labels else 0)


def _task_folder(root: Path, task: str | None) -> Path:
    if not task:
        raise TransferlabError(
            f"data=vtab1k needs data.task: one of {', '.join(VTAB1K_TASKS)}, or a task folder's name under {root}."
        )
    for name in (task, *[a for a, canonical in ALIASES.items() if canonical == task]):
        if (root / name / LISTS["test"]).is_file() or (root / name).is_dir():
            return root / name
    if task not in VTAB1K_TASKS and task not in ALIASES:
        raise TransferlabError(
            f"data.task={task} is not a task folder under {root} nor a VTAB-1k task.{suggest(task, VTAB1K_TASKS)} "
            f"The 19: {', '.join(VTAB1K_TASKS)}."
        )
    raise TransferlabError(
        f"VTAB-1k task folder {root / task} does not exist. Set data.root to the folder that holds the task folders "
        "(README 'Benchmark suites' says how to get them), or write the offline suite with "
        "`python -m transferlab.data.make_suite DIR`."
    )


def read_list(path: Path, num_classes: int | None = None) -> tuple[list[str], list[int]]:
    """The (files, labels) of one list file, files resolved against its folder; one line for a bad line."""
    if not path.is_file():
        raise TransferlabError(f"VTAB-1k list {path} is missing. A task folder holds {', '.join(LISTS.values())}.")
    files, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise TransferlabError(f"{path} line {number}: expected 'relative/path label', got {line.strip()!r}.")
        file, label = path.parent / parts[0], int(parts[1])
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise TransferlabError(
                f"{path} line {number}: label {label} is out of range for {num_classes} classes (0..{num_classes - 1})."
            )
        if not file.is_file():
            raise TransferlabError(f"{path} line {number}: image {file} does not exist.")
        files.append(str(file))
        labels.append(label)
    if not files:
        raise TransferlabError(f"VTAB-1k list {path} is empty.")
    return files, labels


def vtab1k(
    root: Path,
    image_size: int,
    task: str | None = None,
    on_bad_image: str = "error",
    decode_cache: DecodeCache | None = None,
    **_,
) -> SourceData:
    """One VTAB-1k-layout task: train = train800 then val200 (val200's rows are the fixed validation split), test =
    test.txt. With ``decode_cache`` the images are decoded once into it (as image folders are)."""
    folder = _task_folder(Path(root), task)
    known = suite_task(folder.name).num_classes or None  # the 19 are checked against their class counts
    train_files, train_labels = read_list(folder / LISTS["train"], known)
    val_files, val_labels = read_list(folder / LISTS["val"], known)
    test_files, test_labels = read_list(folder / LISTS["test"], known)
    num_classes = known or max(train_labels + val_labels + test_labels) + 1
    classes = [str(i) for i in range(num_classes)]
    files, labels = train_files + val_files, train_labels + val_labels
    train = file_images(files, labels, classes, image_size, decode_cache, folder, on_bad_image)
    test = file_images(test_files, test_labels, classes, image_size, decode_cache, folder, on_bad_image)
    if len(train) != len(files):
        raise TransferlabError(f"{folder}: unreadable training images. Fix them, or remove their lines.")
    group = suite_task(folder.name).group
    return SourceData(train, test, val_indices=list(range(len(train_files), len(files))), group=group)
