"""Errors raised for bad user input. Each names the input and what was expected."""


class TaskspecError(ValueError):
    """Base class: a user-facing error whose message is meant to be printed as is."""


class TargetError(TaskspecError):
    """A target spec that cannot be loaded (unknown id, missing file, no causal-LM head, ...)."""


class DrafterError(TaskspecError):
    """A drafter that cannot be built or does not fit the target (vocabulary, tokenizer, ...)."""


class GenerationInputError(TaskspecError):
    """A request the engine refuses: empty or over-long prompt, bad sampling options."""
