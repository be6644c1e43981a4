"""Models as pure functions: any model (flax, nnx, a JAX callable, a torch module through
``jablate.bridges``) becomes ``apply(params, X, *args)`` with its parameters
(``runner``), cached by structure and never kept alive; models named by a command-line
SPEC and runs with command-line options (``loading``)."""
