"""Every data source by name (``data.name``): the built-in datasets, image folders and VTAB-1k-layout suites."""

from __future__ import annotations

from collections.abc import Callable

from transferlab.data.sources import cifar10, cifar100, digits, fashion_mnist, flowers102, imagefolder, pets
from transferlab.data.vtab import vtab1k

SOURCES: dict[str, Callable] = {
    "fashion_mnist": fashion_mnist,
    "digits": digits,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "imagefolder": imagefolder,
    "flowers102": flowers102,
    "pets": pets,
    "vtab1k": vtab1k,
}
