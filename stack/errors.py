"""The one error the stack raises: its message is the single line ``make stack`` prints."""


class StackError(RuntimeError):
    pass
