"""Inlining op methods into a ``tinytorch.compile`` replay: the op's own code, without the call.

A replay calls each op's ``forward`` and ``gradient`` methods. For a small op the call costs
more than the arithmetic (a Python frame, a tuple for the gradients, ``self.needs_input_grad``
read and tested every time). When a method is simple enough, its body is copied into the
replay instead, with what the recording already knows filled in:

- the arguments' names replace the parameters (``return a + b`` becomes ``v7 = v3 + v5``);
- ``self.<attr>`` holding an immutable value (``needs_input_grad``, an ``axis``, a
  ``reduction``) becomes that value; so do an argument's ``ndim``, ``shape`` and ``size``
  (not its ``dtype``, which stays an object), ``len()`` of it and ``isinstance()`` tests on
  it, since a recording holds for one signature of shapes and types only (a replay works on
  arrays, never on Tensors);
- conditional expressions and ``if`` statements whose test has become a constant keep only
  the branch taken, and ``try`` keeps its body (a replay never fails where its recording ran);
  ``x is None`` on an argument is a constant too, and so is ``len()`` of a constant;
- a call of a one-line tinytorch helper (``def _raw(v): return v._data if isinstance(v,
  Tensor) else v``) becomes its expression with the call's arguments in place, folded like
  the rest (``_raw(out)`` is ``out`` in a replay, ``_swap_last_two(b)`` is ``b.T`` for a
  matrix), so that a method calling helpers is inlined whole;
- the method's own local names get a unique prefix, and the globals it uses (``np``,
  helpers such as ``_expand``) are passed to the replay under names of their own.

"Simple enough" means that what is left is plain assignments to local names and one
``return``: a loop, a ``with``, an ``if`` on a value only known when the replay runs, or an
assignment to an attribute (state a method keeps on ``self`` for the gradient) keeps the
method a call. The code that runs is the op's own, so the numbers are the same, bit for bit.
"""

import ast
import builtins
import functools
import inspect
import itertools
import operator
import re
import textwrap
import types

import numpy as np

_FOLDABLE = (bool, int, float, str, type(None))
_ARRAY_FACTS = ("ndim", "shape", "size")


class NotInlinable(Exception):
    """The method is not simple enough to copy into a replay."""


def _copy_tree(node):
    """A copy of an AST (the rewriter changes the tree it visits): ``copy.deepcopy`` without
    its memo and dispatch, ~5x faster, which is most of a small step's recording."""
    if node.__class__ is list:                 # nodes, or None ({**d}'s key) and names
        return [_copy_tree(n) if isinstance(n, (ast.AST, list)) else n for n in node]
    new = node.__class__.__new__(node.__class__)
    fields = new.__dict__
    for key, value in node.__dict__.items():
        fields[key] = _copy_tree(value) if isinstance(value, (ast.AST, list)) else value
    return new


@functools.lru_cache(maxsize=None)
def _definition(function):
    """The FunctionDef of ``function`` (None if its source cannot be read)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None
    definition = tree.body[0]
    args = getattr(definition, "args", None)
    if not isinstance(definition, ast.FunctionDef) or args.vararg or args.kwarg:
        return None
    return definition


class Inliner:
    """Inlines op methods for one recording (see the module's docstring).

    The first inlining of a method for given facts (the ``self`` attributes and argument
    shapes it folded in) is kept as a template, so a graph of 40,000 small ops rewrites each
    kind of method once. ``name_of(value)`` gives the replay's name for a global a method uses.
    """

    def __init__(self, name_of):
        self.name_of = name_of
        self.templates = {}          # (function, argument names) -> [(facts, template)]
        self.count = itertools.count()

    def inline(self, method, node, args, kwargs, values):
        """The lines computing ``method(*args, **kwargs)`` and the expression of its result:
        ``(lines, expression)``, for a method returning a tuple a list of element expressions
        (None for a constant None). ``args``/``kwargs`` are the arguments' expressions in the
        replay, ``values`` their values in the recording (by parameter position, then name).

        Raises :class:`NotInlinable` when the method is not simple enough.
        """
        function = method.__func__
        key = (function, len(args), tuple(sorted(kwargs)))
        for facts, template in self.templates.get(key, ()):
            if all(_fact(node, values, fact) == value for fact, value in facts):
                break
        else:
            template, facts = self._template(function, node, len(args), sorted(kwargs), values)
            self.templates.setdefault(key, []).append((facts, template))
        lines, result = template
        fill = {**{f"a{i}": a for i, a in enumerate(args)},
                **{f"k_{name}": value for name, value in kwargs.items()},
                "p": f"_i{next(self.count)}_"}
        lines = [line.format(**fill) for line in lines]
        if isinstance(result, list):
            return lines, [None if r is None else r.format(**fill) for r in result]
        return lines, result.format(**fill)

    def _template(self, function, node, count, keywords, values):
        definition = _definition(function)
        if definition is None:
            raise NotInlinable(function.__qualname__)
        args = definition.args
        params = [a.arg for a in args.args]
        if not params or params[0] != "self" or count > len(params) - 1:
            raise NotInlinable("arguments")
        bindings, known = {}, {}
        for i, name in enumerate(params[1:count + 1]):
            bindings[name], known[name] = ast.Name(f"__a{i}__", ast.Load()), ("a", i)
        kwonly = {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults)}
        for name in keywords:
            if name in bindings or (name not in params and name not in kwonly):
                raise NotInlinable(f"argument {name}")
            bindings[name], known[name] = ast.Name(f"__k_{name}__", ast.Load()), ("k", name)
        defaults = dict(zip(params[len(params) - len(args.defaults):], args.defaults))
        for name in params[1:] + list(kwonly):
            if name not in bindings:
                default = defaults.get(name, kwonly.get(name))
                if default is None:
                    raise NotInlinable(f"missing {name}")
                bindings[name] = _copy_tree(default)
        rewriter = _Rewriter(node, bindings, known, values, function.__globals__, self.name_of)
        lines, result = rewriter.statements(definition.body)
        if result is None:
            raise NotInlinable("no return")
        if isinstance(result, ast.Tuple):
            result = [None if _is_none(e) else _format(ast.unparse(e)) for e in result.elts]
        else:
            result = _format(ast.unparse(result))
        return ([_format(line) for line in lines], result), tuple(rewriter.facts.items())


_ARGUMENT = re.compile(r"__(?:a(\d+)|k_(\w+?))__")


@functools.lru_cache(maxsize=None)
def _helper_expression(function):
    """``(parameters, expression, uses per parameter, free names)`` of a tinytorch function
    whose body is one ``return <expression>`` (after its docstring); None for any other."""
    if not (function.__module__ or "").startswith("tinytorch.") or function.__defaults__ or (
            function.__kwdefaults__):
        return None
    definition = _definition(function)
    if definition is None or definition.args.kwonlyargs or definition.args.posonlyargs:
        return None
    body = [s for s in definition.body
            if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        return None
    expression = body[0].value
    if any(isinstance(n, (ast.Lambda, ast.NamedExpr, ast.comprehension, ast.Await, ast.Yield,
                          ast.YieldFrom)) for n in ast.walk(expression)):
        return None                                            # names of their own
    params = tuple(a.arg for a in definition.args.args)
    uses, free = {}, set()
    for n in ast.walk(expression):
        if isinstance(n, ast.Name):
            if n.id in params:
                uses[n.id] = uses.get(n.id, 0) + 1
            else:
                free.add(n.id)
    return params, expression, uses, frozenset(free)


class _Substitute(ast.NodeTransformer):
    """A helper's expression with its parameters replaced by the call's arguments and its
    globals by their names in the replay."""

    def __init__(self, arguments, renamed):
        self.arguments, self.renamed = arguments, renamed

    def visit_Name(self, node):
        if node.id in self.arguments:
            return _copy_tree(self.arguments[node.id])
        if node.id in self.renamed:
            name = ast.Name(self.renamed[node.id].id, ast.Load())
            name.resolved = True
            return name
        return node


def _fact(node, values, fact):
    """The value of a fact a template was made for (see :class:`_Rewriter`)."""
    kind, where, what = fact
    if kind == "self":
        return getattr(node, what)
    value = values[where]
    if what == "type":
        return type(value)
    if what == "len":
        return len(value)
    return getattr(value, what)


_PLACEHOLDER = re.compile(r"__(a\d+|k_\w+?|p)__")


def _format(code):
    """Code with placeholders (``__a0__``, ``__k_axis__``, ``__p__``) as a format string."""
    return _PLACEHOLDER.sub(r"{\1}", code.replace("{", "{{").replace("}", "}}"))


def _is_simple(node):
    return isinstance(node, (ast.Constant, ast.Name))


def _is_none(node):
    return isinstance(node, ast.Constant) and node.value is None


_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Is: operator.is_, ast.IsNot: operator.is_not, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _constant(value):
    if isinstance(value, tuple):
        return ast.Tuple([_constant(v) for v in value], ast.Load())
    return ast.Constant(value)


def _value_of(node):
    """The Python value of a folded constant expression (constants, tuples of them)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple) and all(isinstance(e, (ast.Constant, ast.Tuple))
                                           for e in node.elts):
        return tuple(_value_of(e) for e in node.elts)
    raise ValueError


def _is_constant(node):
    try:
        _value_of(node)
    except ValueError:
        return False
    return True


class _Rewriter(ast.NodeTransformer):
    """Substitutes arguments, folds what the recording knows, renames locals and globals.

    ``facts`` collects what was folded in, for the template's cache: ``("self", None, attr)``
    for an attribute of the op, ``("arg", param, fact)`` for an argument's shape, type...
    """

    def __init__(self, node, bindings, known, values, module_globals, name_of):
        self.node, self.bindings, self.known, self.values = node, bindings, known, values
        self.module_globals, self.name_of = module_globals, name_of
        self.locals = set()
        self.facts = {}
        self.resolved = {}           # replay name -> object, for globals already renamed
        self.depth = 0               # helpers being inlined into one another

    # statements --------------------------------------------------------------------------------
    def statements(self, body):
        """(lines, returned expression or None) of a block, folding ``if`` and ``try``. Each
        expression is copied before it is visited (visiting changes it), and only when it is
        reached: a method given up at its first statement costs one statement's copy."""
        lines = []
        for statement in body:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                continue                                       # a docstring
            if isinstance(statement, ast.Return):
                if statement.value is None:
                    raise NotInlinable("return without a value")
                return lines, self.visit(_copy_tree(statement.value))
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                lines.extend(self._assign(statement.targets[0],
                                          self.visit(_copy_tree(statement.value))))
                continue
            if isinstance(statement, ast.If):
                test = self.visit(_copy_tree(statement.test))
                if not _is_constant(test):
                    raise NotInlinable("an if on a value known only when the replay runs")
                inner, result = self.statements(statement.body if _value_of(test)
                                                else statement.orelse)
            elif isinstance(statement, ast.Try) and not statement.finalbody:
                inner, result = self.statements(statement.body)
            else:
                raise NotInlinable(type(statement).__name__)
            lines.extend(inner)
            if result is not None:
                return lines, result
        return lines, None

    def _assign(self, target, value):
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(
                target.elts) == len(value.elts):
            pairs = zip(target.elts, value.elts)              # a, b = x, y: one name each
        else:
            pairs = [(target, value)]
        lines = []
        for name, element in pairs:
            if not all(isinstance(t, ast.Name) for t in ast.walk(name)
                       if not isinstance(t, (ast.Tuple, ast.Load, ast.Store))):
                raise NotInlinable("an assignment to something other than a local name")
            if isinstance(name, ast.Name) and _is_simple(element):
                self.locals.discard(name.id)
                self.bindings[name.id] = element               # a constant or a name
                continue
            lines.append(f"{ast.unparse(self._store(name))} = {ast.unparse(element)}")
        return lines

    def _store(self, target):
        if isinstance(target, ast.Name):
            self.locals.add(target.id)
            self.bindings.pop(target.id, None)
            self.known.pop(target.id, None)
            return ast.Name("__p__" + target.id, ast.Store())
        return ast.Tuple([self._store(e) for e in target.elts], ast.Store())

    # expressions -------------------------------------------------------------------------------
    def visit_Name(self, node):
        if getattr(node, "resolved", False):
            return node                                        # a global, already renamed
        if node.id in self.bindings:
            return self.bindings[node.id]
        if node.id in self.locals:
            return ast.Name("__p__" + node.id, ast.Load())
        if node.id.startswith("__") and node.id.endswith("__"):
            return node                                        # a placeholder
        if node.id == "self":
            raise NotInlinable("self used other than self.<attribute>")
        if node.id in self.module_globals:
            return self._resolved(self.module_globals[node.id])
        if hasattr(builtins, node.id):
            return node
        raise NotInlinable(f"unknown name {node.id}")

    def _resolved(self, value):
        """A name for a global's value in the replay (marked, so it is not looked up again)."""
        name = ast.Name(self.name_of(value), ast.Load())
        name.resolved = True
        self.resolved[name.id] = value
        return name

    def _argument_value(self, node):
        """(where, its value in the recording) when ``node`` is an argument: its parameter's
        name, or the placeholder that replaced it (``where`` is the argument's position or
        keyword, as in the facts)."""
        if not isinstance(node, ast.Name):
            return None, None
        if node.id in self.known and node.id not in self.locals:
            where = self.known[node.id][1]
        else:
            match = _ARGUMENT.fullmatch(node.id)
            if match is None:
                return None, None
            where = int(match[1]) if match[1] is not None else match[2]
        if where not in self.values:
            return None, None
        return where, self.values[where]

    def _fold(self, fact, value):
        self.facts[fact] = value
        return _constant(value)

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            value = getattr(self.node, node.attr)
            if isinstance(value, _FOLDABLE) or (isinstance(value, tuple) and all(
                    isinstance(v, _FOLDABLE) for v in value)):
                return self._fold(("self", None, node.attr), value)
            raise NotInlinable(f"self.{node.attr} is not a constant")
        owner = self.visit(node.value)
        where, value = self._argument_value(owner)
        if where is not None and node.attr in _ARRAY_FACTS and hasattr(value, node.attr):
            return self._fold(("arg", where, node.attr), getattr(value, node.attr))
        return ast.Attribute(owner, node.attr, node.ctx)

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Name) and func.id == "isinstance" and len(node.args) == 2:
            arg = self.visit(node.args[0])
            where, value = self._argument_value(arg)
            classes = self._classes(node.args[1])
            if where is not None and classes is not None:
                self.facts[("arg", where, "type")] = type(value)
                return ast.Constant(isinstance(value, classes))
            return ast.Call(self.visit(func), [arg, self.visit(node.args[1])], [])
        if isinstance(func, ast.Name) and func.id == "len" and len(node.args) == 1:
            arg = self.visit(node.args[0])
            where, value = self._argument_value(arg)
            if where is not None and hasattr(value, "__len__"):
                return self._fold(("arg", where, "len"), len(value))
            if _is_constant(arg) and isinstance(_value_of(arg), (str, tuple)):
                return ast.Constant(len(_value_of(arg)))       # len(self.needs_input_grad)
            return ast.Call(self.visit(func), [arg], [])
        if (isinstance(func, ast.Attribute) and func.attr == "swapaxes" and not node.keywords
                and len(node.args) == 2):
            owner, axes = self.visit(func.value), [self.visit(a) for a in node.args]
            where, value = self._argument_value(owner)
            if (where is not None and isinstance(value, np.ndarray) and value.ndim == 2
                    and all(_is_constant(a) and isinstance(_value_of(a), int) for a in axes)
                    and {_value_of(a) % 2 for a in axes} == {0, 1}
                    and all(-2 <= _value_of(a) < 2 for a in axes)):
                self.facts[("arg", where, "type")] = type(value)
                self._fold(("arg", where, "ndim"), 2)
                return ast.Attribute(owner, "T", ast.Load())   # a matrix's transpose
            return ast.Call(ast.Attribute(owner, "swapaxes", ast.Load()), axes, [])
        function = self._global_function(func)
        if function is not None and self.depth < 8:
            expression = self._helper(function, node)
            if expression is not None:
                self.depth += 1
                try:
                    return self.visit(expression)
                except NotInlinable:
                    pass                                       # it stays a call
                finally:
                    self.depth -= 1
        return self.generic_visit(node)

    def _global_function(self, func):
        """The function a call's callee names, when it is a module global (not a local)."""
        if isinstance(func, ast.Name) and getattr(func, "resolved", False):
            value = self.resolved[func.id]
        elif (isinstance(func, ast.Name) and func.id not in self.bindings
              and func.id not in self.locals and func.id in self.module_globals):
            value = self.module_globals[func.id]
        else:
            return None
        return value if isinstance(value, types.FunctionType) else None

    def _helper(self, function, call):
        """The expression a call of a one-line tinytorch helper stands for (``_raw(x)`` is
        ``x._data if isinstance(x, Tensor) else x``), with the call's arguments (not yet
        visited) in place of its parameters and its globals renamed; None when it is not
        such a helper or its arguments cannot be put in place as they are."""
        helper = _helper_expression(function)
        if helper is None or call.keywords or len(call.args) != len(helper[0]) or any(
                isinstance(a, ast.Starred) for a in call.args):
            return None
        params, expression, uses, free = helper
        arguments = dict(zip(params, call.args))
        for name, argument in arguments.items():
            if uses.get(name, 0) != 1 and not isinstance(argument, (ast.Name, ast.Constant)):
                return None                                    # it would run twice, or never
        renamed = {}
        for name in free:
            if name in function.__globals__:
                renamed[name] = self._resolved(function.__globals__[name])
            elif (not hasattr(builtins, name) or name in self.bindings or name in self.locals
                  or name in self.module_globals):
                return None                                    # a builtin shadowed here
        return _Substitute(arguments, renamed).visit(_copy_tree(expression))

    def _classes(self, node):
        """The class(es) an isinstance test names, when they are builtins or module globals."""
        names = node.elts if isinstance(node, ast.Tuple) else [node]
        classes = []
        for n in names:
            if not isinstance(n, ast.Name):
                return None
            if getattr(n, "resolved", False):
                value = self.resolved[n.id]
            else:
                value = self.module_globals.get(n.id, getattr(builtins, n.id, None))
            if not isinstance(value, type):
                return None
            classes.append(value)
        return tuple(classes)

    def visit_IfExp(self, node):
        test = self.visit(node.test)
        if _is_constant(test):
            return self.visit(node.body if _value_of(test) else node.orelse)
        return ast.IfExp(test, self.visit(node.body), self.visit(node.orelse))

    def visit_UnaryOp(self, node):
        operand = self.visit(node.operand)
        if _is_constant(operand):
            if isinstance(node.op, ast.Not):
                return ast.Constant(not _value_of(operand))
            if isinstance(node.op, ast.USub) and isinstance(_value_of(operand), (int, float)):
                return ast.Constant(-_value_of(operand))
        return ast.UnaryOp(node.op, operand)

    def visit_BoolOp(self, node):
        values = [self.visit(v) for v in node.values]
        if all(_is_constant(v) for v in values):
            result = _value_of(values[0])
            for v in values[1:]:
                result = (result and _value_of(v)) if isinstance(node.op, ast.And) else (
                    result or _value_of(v))
            return _constant(result)
        if isinstance(node.op, ast.And) and any(_is_constant(v) and not _value_of(v)
                                                for v in values):
            return ast.Constant(False)
        return ast.BoolOp(node.op, values)

    def visit_Compare(self, node):
        left = self.visit(node.left)
        comparators = [self.visit(c) for c in node.comparators]
        if len(node.ops) == 1 and type(node.ops[0]) in (ast.Is, ast.IsNot):
            for operand, other in ((left, comparators[0]), (comparators[0], left)):
                where, value = self._argument_value(operand)
                if where is not None and _is_none(other):      # an argument is None or not
                    self.facts[("arg", where, "type")] = type(value)
                    return ast.Constant((value is None) == isinstance(node.ops[0], ast.Is))
        if all(_is_constant(v) for v in [left] + comparators) and all(
                type(op) in _COMPARE for op in node.ops):
            result, current = True, _value_of(left)
            for op, c in zip(node.ops, comparators):
                result = result and _COMPARE[type(op)](current, _value_of(c))
                current = _value_of(c)
            return ast.Constant(result)
        return ast.Compare(left, node.ops, comparators)

    def visit_BinOp(self, node):
        left, right = self.visit(node.left), self.visit(node.right)
        if (type(node.op) in _ARITHMETIC and _is_constant(left) and _is_constant(right)
                and isinstance(_value_of(left), int) and isinstance(_value_of(right), int)):
            return ast.Constant(_ARITHMETIC[type(node.op)](_value_of(left), _value_of(right)))
        return ast.BinOp(left, node.op, right)

    def visit_Subscript(self, node):
        value = self.visit(node.value)
        index = self.visit(node.slice)
        if (isinstance(value, ast.Tuple) and _is_constant(index)
                and isinstance(_value_of(index), int)
                and -len(value.elts) <= _value_of(index) < len(value.elts)):
            return value.elts[_value_of(index)]
        if _is_constant(value) and _is_constant(index):
            try:
                return _constant(_value_of(value)[_value_of(index)])
            except (TypeError, IndexError, KeyError):
                pass
        return ast.Subscript(value, index, node.ctx)
