"""Errors a user can act on. Each message names the thing that is wrong and the fix."""


class FeatcacheError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ModelLoadError(FeatcacheError):
    """A checkpoint could not be loaded (no hub access, bad folder, unsupported class)."""


class DatasetError(FeatcacheError):
    """A dataset could not be read: unknown name, missing column, missing image, empty question."""


class CacheFormatError(FeatcacheError):
    """A cache file is unreadable, of another format version, or was made by another model."""


class ExtractError(FeatcacheError):
    """An extraction run cannot go on (bad item without --skip-bad, conflicting earlier run)."""


class UnsafeFileError(FeatcacheError):
    """A file that could run code when loaded (pickle, joblib, torch.save) was given without --trust-pickle."""


class ZeroShotError(FeatcacheError):
    """A zero-shot run asked for something its model or cache cannot do (a method, an answer, a prompt)."""


class ScoreError(FeatcacheError):
    """A results or annotation file cannot be scored (missing or unknown question ids, a bad layout)."""


class NonFiniteError(FeatcacheError, ValueError):
    """Features or weights hold NaN or inf (a ValueError too, as scikit-learn's estimators raise)."""
