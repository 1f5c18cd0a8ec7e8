"""Arithmetic without `eval`: the expression's syntax tree is walked with a whitelist.

Only numbers, `+ - * / ** %`, unary signs and parentheses are accepted. Integers stay exact
but are bounded in size (a huge power is refused before it is computed); floats are shown with
15 significant digits, so `0.1+0.2` reads `0.3`.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from crew_platform.tools.base import ToolError

Number = int | float

MAX_EXPRESSION_CHARS = 500
MAX_INT_BITS = 4096
"""About 1,233 decimal digits."""

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _bounded(value: object) -> Number:
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("the result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large")
    assert isinstance(value, int | float)
    return value


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        bits_at_least = (abs(base).bit_length() - 1) * exponent
        if bits_at_least > MAX_INT_BITS:
            raise ToolError("the result is too large")
    return _bounded(base**exponent)


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    raise ToolError(
        f"{type(node).__name__} is not allowed: only numbers, + - * / ** % and parentheses"
    )


def format_number(value: Number) -> str:
    if isinstance(value, float):
        return f"{value:.15g}"
    return str(value)


def calculate(expression: str) -> str:
    """The value of `expression`, or a `ToolError` saying why there is none."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        return format_number(_evaluate(tree))
    except ToolError:
        raise
    except SyntaxError as exc:
        raise ToolError(f"malformed expression: {exc.msg}") from exc
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    except (OverflowError, MemoryError, RecursionError) as exc:
        raise ToolError("the result is too large") from exc
