"""The one error type the project raises for bad input (files, images, labels, text, checkpoints)."""

from __future__ import annotations

from os import PathLike

__all__ = ["BadInputError"]


class BadInputError(ValueError):
    """Bad input: the message always names the offending file (or case) and the problem.

    Args:
        source: the file path, case id or config key the problem was found in.
        problem: what is wrong, in words a clinical researcher understands, ideally with the fix.

    Example::

        raise BadInputError("data/img_01.nii.gz", "expected a 3D volume, got shape (256, 256)")
        # -> "data/img_01.nii.gz: expected a 3D volume, got shape (256, 256)"
    """

    def __init__(self, source: str | PathLike | None, problem: str) -> None:
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(problem if self.source is None else f"{self.source}: {problem}")

    def __reduce__(self):  # keep picklable across DataLoader workers
        return (type(self), (self.source, self.problem))
