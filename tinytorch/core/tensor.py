"""The Tensor: an n-dimensional NumPy array that remembers how it was computed.

>>> import tinytorch as tt
>>> x = tt.Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
>>> loss = (x * x).sum()
>>> loss.backward()
>>> x.grad                     # d(sum x^2)/dx = 2x
Tensor([[2., 4.],
        [6., 8.]], dtype=float32)

Every operation below is one line that hands the work to an op class in ``ops.py``, where the
op's forward computation and its gradient rule stand side by side.
"""

import operator

import numpy as np

from tinytorch.core import autograd, hooks, inplace
from tinytorch.core.grad_mode import is_grad_enabled, no_grad
from tinytorch.core.tracing import note, replayed_as_a_call
from tinytorch.core.tracing import state as _tracing

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_default_dtype = np.dtype(np.float32)


def set_default_dtype(dtype):
    """Set the dtype that new Tensors get from lists, numbers and arrays (float32 by default).

    >>> set_default_dtype(np.float64)
    """
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype.type not in _FLOAT_DTYPES:
        raise TypeError(f"set_default_dtype: the default must be a float dtype "
                        f"(float16, float32 or float64), got {dtype}")
    _default_dtype = dtype


def get_default_dtype():
    """The dtype new Tensors get when none is given (see :func:`set_default_dtype`)."""
    return _default_dtype


def _to_array(data, dtype):
    """Convert Tensor creation input to a fresh ndarray.

    Without ``dtype``: numbers, lists and integer or float arrays become the default float
    dtype (the TinyTorch convention), bool stays bool, and a Tensor keeps its dtype.
    """
    if isinstance(data, Tensor):
        note("Tensor(t) (a copy of a tensor's values)")
        return np.array(data._data, dtype=dtype)
    if dtype is not None:
        return np.array(data, dtype=dtype)
    array = np.array(data)
    kind = array.dtype.kind
    if kind in "iuf":
        return array.astype(_default_dtype, copy=False)
    if kind == "b":
        return array
    raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__} data "
                    f"of NumPy dtype {array.dtype}")


def _operand(value, like=None):
    """A non-Tensor operand of an op on the Tensor ``like``, as a Tensor.

    Arrays, lists and NumPy scalars take ``like``'s dtype when ``like`` is a float Tensor, as a
    number would: ``x64 * np_array`` stays exact and ``x32 + np_array`` stays float32.
    """
    if isinstance(like, Tensor) and like._data.dtype.type in _FLOAT_DTYPES:
        return Tensor(value, dtype=like._data.dtype)
    array = np.asarray(value)
    if array.dtype.kind in "iub":             # integers stay integers (as in PyTorch)
        return Tensor(array, dtype=array.dtype)
    return Tensor(array)


def _as_float(tensor, dtype=None):
    """An integer or bool tensor as floats (``dtype``, default the default dtype); no gradient
    is lost, since such tensors cannot require one."""
    return autograd.run_numpy(np.ndarray.astype, tensor, dtype or _default_dtype)


def _operands(tensor, other):
    """``(tensor, other)`` ready for a binary op, with PyTorch's dtype rules.

    - A float tensor keeps its dtype with Python numbers, NumPy scalars, arrays and lists
      (they take its dtype), and an integer or bool tensor combined with floats (a float
      tensor, array or Python float) takes the float dtype. NumPy alone would make float64 of
      int64 with float32.
    - Two float tensors of different precision give the wider one, as in NumPy and PyTorch.
    - A Python number on a float32/float64 tensor becomes a cached read-only 0-d array of its
      dtype: NumPy gives the same result for ``x + 0.1`` and ``x + np.array(0.1, x.dtype)`` but
      takes half the time for the second on small arrays, in forward and again in the rules.
      Zeros (whose sign matters), NaN and numbers that might overflow stay plain numbers.
    """
    kind = type(other)
    if kind is Tensor:
        if other._data.dtype is tensor._data.dtype:
            return tensor, other
        return _promoted(tensor, other)
    if kind is float or kind is int:
        constant = _constants.get((other, tensor._data.dtype))
        return (tensor, constant) if constant is not None else _with_number(tensor, other)
    if isinstance(other, Tensor):
        return _promoted(tensor, other)
    if isinstance(other, np.generic) and other.ndim == 0 and other.dtype.kind in "biuf":
        other = other.item()                         # a NumPy scalar is a number (PyTorch)
    if isinstance(other, (int, float)):
        return _with_number(tensor, other)           # bool and other int subclasses
    return _promoted(tensor, _operand(other, tensor))


def _promoted(a, b):
    """Two Tensors, the integer (or bool) one converted to the other's float dtype."""
    a_float = a._data.dtype.type in _FLOAT_DTYPES
    b_float = b._data.dtype.type in _FLOAT_DTYPES
    if a_float and not b_float:
        return a, _as_float(b, a._data.dtype)
    if b_float and not a_float:
        return _as_float(a, b._data.dtype), b
    return a, b


_constants = {}       # (Python number, float dtype) -> the number as a read-only 0-d array


def _with_number(tensor, number):
    """``(tensor, number)`` for a Python number (see :func:`_operands`)."""
    dtype = tensor._data.dtype
    constant = _constants.get((number, dtype))
    if constant is not None:
        return tensor, constant
    if dtype.type not in _FLOAT_DTYPES:
        if isinstance(number, float):
            return _as_float(tensor), number
        return tensor, number
    if dtype.type is np.float16 or number == 0 or not -1e30 < number < 1e30:
        return tensor, number
    constant = np.array(number, dtype=dtype)
    constant.flags.writeable = False
    if len(_constants) >= 1024:
        _constants.clear()
    _constants[(number, dtype)] = constant
    return tensor, constant


def _division_operands(tensor, other):
    """:func:`_operands` for true division: integers divide into the default float dtype."""
    tensor, other = _operands(tensor, other)
    if tensor._data.dtype.type not in _FLOAT_DTYPES:
        tensor = _as_float(tensor)
        if isinstance(other, Tensor):
            tensor, other = _promoted(tensor, other)
    return tensor, other


class Tensor:
    """An n-dimensional array with automatic differentiation.

    ``Tensor(data, requires_grad=False, dtype=None)``: ``data`` is a number, (nested) list,
    NumPy array or Tensor. Floats default to float32 (also float64 arrays and integers), unless
    ``dtype`` is given. Operations on tensors that require grad record a graph, and
    ``backward()`` fills ``.grad`` of the leaves.

    >>> w = Tensor([1.0, -2.0], requires_grad=True)
    >>> (w * 3).sum().backward()
    >>> w.grad
    Tensor([3., 3.], dtype=float32)
    """

    # ``_data`` and ``_grad`` are plain slots (the engine reads them millions of times); the
    # public ``data`` and ``grad`` are properties that check what is assigned to them.
    __slots__ = ("_data", "requires_grad", "_grad", "grad_fn", "__weakref__")

    def __init__(self, data, requires_grad=False, dtype=None):
        self._data = _to_array(data, dtype)
        self._grad = None
        self.grad_fn = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _make(cls, data, grad_fn=None):
        """Wrap an op's result array (no copy, no conversion); used by the engine and ops."""
        t = object.__new__(cls)
        t._data = data if type(data) is np.ndarray else np.asarray(data)
        t._grad = None
        t.grad_fn = grad_fn
        t.requires_grad = grad_fn is not None
        return t

    # ----- NumPy interop ------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """NumPy ufuncs on Tensors, as on PyTorch tensors.

        An arithmetic operator with an array on the left (``ndarray + Tensor``, ``np.float32(2)
        * t``, which NumPy turns into ``np.add(...)`` etc.) is our differentiable op and gives a
        Tensor. Every other ufunc (``np.abs(x.grad)``, ``np.isfinite(t)``, ``arr -= t``...)
        computes on the values and returns NumPy's result. On a tensor that requires grad that
        would silently lose its gradient, so it raises a TypeError instead (use the Tensor's
        own method, or ``t.detach()`` / ``t.data``).
        """
        operator_name = _UFUNC_OPERATORS.get(ufunc) if method == "__call__" else None
        if operator_name is not None and not kwargs and len(inputs) == 2:
            a, b = inputs
            if isinstance(a, Tensor):
                return getattr(a, f"__{operator_name}__")(b)
            return getattr(b, f"__r{operator_name}__")(a)
        if ufunc in _UFUNC_COMPARISONS and method == "__call__" and not kwargs:
            a, b = inputs
            if isinstance(a, Tensor):
                return a._compare(b, ufunc)
            return autograd.run_numpy(ufunc, a, b)
        note(f"np.{ufunc.__name__} on a tensor")
        arrays = []
        for value in inputs:
            if isinstance(value, Tensor):
                if value.requires_grad:
                    raise TypeError(
                        f"np.{ufunc.__name__} on a tensor that requires grad would drop its "
                        f"gradient: use the Tensor method (e.g. t.exp(), t.abs()) or apply it "
                        f"to t.detach() or t.data")
                value = value._data
            arrays.append(value)
        if "out" in kwargs:
            kwargs["out"] = tuple(o._data if isinstance(o, Tensor) else o for o in kwargs["out"])
        return getattr(ufunc, method)(*arrays, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        """NumPy functions on Tensors (``np.sum(t)``, ``np.concatenate([a, b])``...).

        Those with a tinytorch op (the reductions ``sum mean max amax min amin var std any all
        argmax argmin``, and ``reshape transpose squeeze clip concatenate stack where dot``)
        run it and give a Tensor, differentiable as the op is; NumPy's argument names and
        order are accepted. Every other function computes on the values and returns NumPy's
        result, and raises a TypeError when a tensor among its arguments requires grad, since
        that would silently drop the gradient (PyTorch raises too).
        """
        run = _NUMPY_FUNCTIONS.get(func)
        if run is not None:
            result = run(*args, **kwargs)
            if result is not NotImplemented:
                return result
        if any(t.requires_grad for t in _tensors_in((args, kwargs))):
            raise TypeError(
                f"np.{func.__name__} on a tensor that requires grad would drop its gradient: "
                f"use a tinytorch op, or apply it to t.detach() or t.data")
        note(f"np.{func.__name__} on a tensor (its values)")
        return func(*_values_in(args), **_values_in(kwargs))

    # ----- data and grad -------------------------------------------------------------------------
    def _set_data(self, value):
        if isinstance(value, Tensor):
            value = value._data
        elif isinstance(value, np.generic):
            value = np.asarray(value)
        elif not isinstance(value, np.ndarray):
            raise TypeError(f"Tensor.data must be a NumPy array or a Tensor, got "
                            f"{type(value).__name__} (convert it with np.asarray first)")
        dtype = self._data.dtype
        if dtype.type in _FLOAT_DTYPES and value.dtype != dtype:
            if value.dtype.kind not in "fiub":
                raise TypeError(f"Tensor.data: a float tensor needs numbers, got an array of "
                                f"dtype {value.dtype}")
            value = value.astype(dtype)
        self._data = value

    data = property(operator.attrgetter("_data"), _set_data, doc="""The values, a NumPy array
        (shared, not copied). Assigning replaces them with an array's or a Tensor's values; a
        float tensor keeps its dtype (TinyTorch's rule: ``w.data = np.array(...)`` leaves a
        float32 weight float32, where PyTorch would take the array's dtype). Autograd does not
        see such a change: it is the escape hatch for updates that must not be recorded.""")

    def _set_grad(self, value):
        if _tracing.recording:
            _tracing.recorder.grad_assigned(self, value)
        self._grad = None if value is None else _gradient_for(self, value)

    grad = property(operator.attrgetter("_grad"), _set_grad, doc="""The gradient summed into
        this tensor by backward: None or a Tensor of this tensor's shape and dtype. Assigning
        accepts None, a Tensor or a NumPy array of this shape (stored as a Tensor of this
        dtype; an array is copied) and refuses anything else.""")

    # ----- attributes ------------------------------------------------------------------------
    @property
    def shape(self):
        return self._data.shape

    @property
    def size(self):
        """Number of elements."""
        return self._data.size

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def is_leaf(self):
        """True for tensors not produced by a recorded operation."""
        return self.grad_fn is None

    @property
    def _grad_fn(self):
        return self.grad_fn

    @_grad_fn.setter
    def _grad_fn(self, node):
        self.grad_fn = node

    @property
    def T(self):
        """The tensor with its axes reversed (the matrix transpose for 2-D)."""
        return self.permute(*range(self.ndim - 1, -1, -1))

    # ----- gradient life-cycle -----------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (reverse-mode autodiff).

        ``gradient`` is d(loss)/d(self); it may be omitted for one-element tensors. The graph's
        saved tensors are freed afterwards unless ``retain_graph=True``. With
        ``create_graph=True`` the gradients are themselves differentiable.
        """
        autograd.backward([self], [gradient], retain_graph=retain_graph,
                           create_graph=create_graph)

    @replayed_as_a_call
    def zero_grad(self):
        """Forget the accumulated gradient (``grad`` becomes None)."""
        self._grad = None

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place (leaves only) and return self."""
        if requires_grad and self._data.dtype.type not in _FLOAT_DTYPES:
            raise TypeError(f"only floating-point tensors can require gradients, "
                            f"but this tensor has dtype {self._data.dtype}")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad_(False) is only allowed on leaves; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep it)."""
        note("retain_grad()")
        hooks.retain_grad(self)

    def register_hook(self, hook):
        """Call ``hook(grad)`` each time this tensor's gradient is computed in backward.

        The hook gets the gradient as a Tensor and may return a replacement (same shape).
        Returns a handle whose ``remove()`` unregisters it. Hooks run in registration order.

        >>> handle = x.register_hook(lambda g: g * 2)    # doubles the gradient reaching x
        >>> handle.remove()
        """
        note("register_hook()")
        return hooks.register_hook(self, hook)

    def detach(self):
        """A new leaf sharing this tensor's data, cut off from the graph."""
        return Tensor._make(self._data)

    def clone(self):
        """A differentiable copy."""
        return autograd.run_op(autograd.CloneBackward, self)

    copy = clone

    # ----- conversion --------------------------------------------------------------------------
    def numpy(self):
        """The underlying NumPy array (shared, not copied)."""
        note("t.numpy()")
        return self._data

    def item(self):
        """The single element as a Python number."""
        if self._data.size != 1:
            raise ValueError(f"item() needs a tensor with exactly one element, got shape {self.shape}")
        note("t.item()")
        return self._data.item()

    def tolist(self):
        note("t.tolist()")
        return self._data.tolist()

    def __array__(self, dtype=None, copy=None):
        """The values for NumPy (``np.asarray(t)``); a TypeError for a tensor that requires
        grad, whose gradient NumPy would silently drop (as PyTorch): use ``t.detach()``."""
        if self.requires_grad:
            raise TypeError("NumPy cannot use a tensor that requires grad without dropping its "
                            "gradient: use a tinytorch op, or t.detach() / t.data / t.numpy()")
        note("np.asarray(t) (a tensor's values)")
        if dtype is None:
            return self._data.copy() if copy else self._data
        return self._data.astype(dtype, copy=bool(copy))

    def astype(self, dtype):
        """This tensor converted to ``dtype`` (differentiable between float dtypes)."""
        dtype = np.dtype(dtype)
        if dtype.type not in _FLOAT_DTYPES:
            return autograd.run_numpy(np.ndarray.astype, self, dtype)
        return autograd.run_op(autograd.CastBackward, self, dtype=dtype)

    def to(self, dtype=None, *args, **kwargs):
        """PyTorch's ``t.to(dtype)``: this tensor as ``dtype`` (itself when it already is).

        A device (``'cpu'``) is accepted and ignored, since tinytorch runs on the CPU only.
        """
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", dtype)
        if kwargs or args:
            raise TypeError(f"to() takes a dtype and/or device='cpu', got {args} {kwargs}")
        if isinstance(dtype, str) and dtype.split(":")[0] in ("cpu", "cuda", "mps", "xpu"):
            dtype, device = None, dtype
        if device not in (None, "cpu"):
            raise ValueError(f"to(): tinytorch runs on the CPU only, got device {device!r}")
        if dtype is None or np.dtype(dtype) == self._data.dtype:
            return self
        return self.astype(dtype)

    def float(self):
        """This tensor as float32 (itself when it already is)."""
        return self.to(np.float32)

    def double(self):
        """This tensor as float64 (itself when it already is)."""
        return self.to(np.float64)

    def half(self):
        """This tensor as float16 (itself when it already is)."""
        return self.to(np.float16)

    def long(self):
        """This tensor as int64 (no gradient flows through integers)."""
        return self.to(np.int64)

    def int(self):
        """This tensor as int32 (no gradient flows through integers)."""
        return self.to(np.int32)

    def bool(self):
        """This tensor as bool (True where nonzero)."""
        return self.to(np.bool_)

    def memory_footprint(self):
        """Bytes the values take (TinyTorch's name for ``data.nbytes``)."""
        return self._data.nbytes

    def numel(self):
        """The number of elements (PyTorch's name; ``size`` is TinyTorch's)."""
        return self._data.size

    def dim(self):
        """The number of axes (PyTorch's name; also ``ndim``)."""
        return self._data.ndim

    def contiguous(self):
        """This tensor with its values in C order: itself when they already are, else a copy."""
        return self if self._data.flags.c_contiguous else self.clone()

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self._data)

    def __bool__(self):
        if self._data.size != 1:
            raise ValueError(f"the truth value of a tensor with {self._data.size} elements is "
                             f"ambiguous; use .any() or .all()")
        note("bool(t) (e.g. an if on a tensor)")
        return bool(self._data)

    def __format__(self, spec):
        """A one-element tensor formats as its number (``f"{loss:.4f}"``), as in PyTorch;
        a format spec on any other tensor raises TypeError, as in PyTorch."""
        if spec and self._data.size != 1:
            raise TypeError(f"unsupported format string {spec!r} passed to Tensor.__format__: "
                            f"only one-element tensors format as numbers, this one has shape "
                            f"{self.shape}")
        if spec:
            return format(self.item(), spec)
        return str(self)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iu" or self._data.size != 1:
            raise TypeError("only one-element integer tensors can be used as an index")
        note("a tensor as a Python index")
        return int(self._data.item())

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    __hash__ = object.__hash__

    def __repr__(self):
        note("printing a tensor")
        body = np.array2string(self._data, separator=", ", prefix="Tensor(")
        extra = ""
        if self.grad_fn is not None:
            extra = f", grad_fn={self.grad_fn!r}"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        return f"Tensor({body}, dtype={self._data.dtype}{extra})"

    # ----- arithmetic ---------------------------------------------------------------------------
    def __add__(self, other):
        a, b = _operands(self, other)
        return autograd.run_op(autograd.AddBackward, a, b)

    def __radd__(self, other):
        b, a = _operands(self, other)
        return autograd.run_op(autograd.AddBackward, a, b)

    def __sub__(self, other):
        a, b = _operands(self, other)
        return autograd.run_op(autograd.SubBackward, a, b)

    def __rsub__(self, other):
        b, a = _operands(self, other)
        return autograd.run_op(autograd.SubBackward, a, b)

    def __mul__(self, other):
        a, b = _operands(self, other)
        return autograd.run_op(autograd.MulBackward, a, b)

    def __rmul__(self, other):
        b, a = _operands(self, other)
        return autograd.run_op(autograd.MulBackward, a, b)

    def __truediv__(self, other):
        a, b = _division_operands(self, other)
        return autograd.run_op(autograd.DivBackward, a, b)

    def __rtruediv__(self, other):
        b, a = _division_operands(self, other)
        return autograd.run_op(autograd.DivBackward, a, b)

    def __pow__(self, exponent):
        a, b = _operands(self, exponent)
        return autograd.run_op(autograd.PowBackward, a, b)

    def __rpow__(self, base):
        b, a = _operands(self, base)
        return autograd.run_op(autograd.PowBackward, a, b)

    def __matmul__(self, other):
        a, b = _operands(self, other)
        return autograd.run_op(autograd.MatmulBackward, a, b)

    def __rmatmul__(self, other):
        b, a = _operands(self, other)
        return autograd.run_op(autograd.MatmulBackward, a, b)

    def __abs__(self):
        return self.abs()

    def __neg__(self):
        return autograd.run_op(autograd.NegBackward, self)

    def __pos__(self):
        return self

    def add(self, other):
        return self + other

    def sub(self, other):
        return self - other

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def matmul(self, other):
        """Matrix product with NumPy's rules: 1-D operands, batched (broadcast) leading axes."""
        return self @ other

    def pow(self, exponent):
        return self ** exponent

    # ----- comparisons (no gradient) ------------------------------------------------------------
    def _compare(self, other, ufunc):
        return autograd.run_numpy(ufunc, self, other)

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    # ----- elementwise functions -----------------------------------------------------------------
    # Integers go in as the default float dtype, as in PyTorch (``_floating``, inlined: these run
    # for every op).
    def exp(self):
        x = self if self._data.dtype.kind == "f" else _as_float(self)
        return autograd.run_op(autograd.ExpBackward, x)

    def log(self):
        x = self if self._data.dtype.kind == "f" else _as_float(self)
        return autograd.run_op(autograd.LogBackward, x)

    def sqrt(self):
        x = self if self._data.dtype.kind == "f" else _as_float(self)
        return autograd.run_op(autograd.SqrtBackward, x)

    def abs(self):
        return autograd.run_op(autograd.AbsBackward, self)

    def tanh(self):
        x = self if self._data.dtype.kind == "f" else _as_float(self)
        return autograd.run_op(autograd.TanhBackward, x)

    def sigmoid(self):
        x = self if self._data.dtype.kind == "f" else _as_float(self)
        return autograd.run_op(autograd.SigmoidBackward, x)

    def relu(self):
        return autograd.run_op(autograd.ReLUBackward, self)

    def sin(self):
        x = self if self._data.dtype.kind == "f" else _as_float(self)
        return autograd.run_op(autograd.SinBackward, x)

    def cos(self):
        x = self if self._data.dtype.kind == "f" else _as_float(self)
        return autograd.run_op(autograd.CosBackward, x)

    def masked_fill(self, mask, value):
        """``value`` where ``mask`` is true (nonzero), this tensor elsewhere (differentiable in
        this tensor); ``mask`` broadcasts to this tensor's shape."""
        mask = autograd.run_numpy(np.not_equal, mask, 0)
        full = autograd.run_numpy(np.broadcast_to, mask,
                                  np.broadcast_shapes(mask.shape, self.shape))
        return where(full, value, self)

    def clip(self, min=None, max=None):
        """Limit values to [min, max]; the gradient flows where min <= x <= max.

        The bounds (numbers, arrays or Tensors) are constants: no gradient flows to them.
        """
        if min is None and max is None:
            raise ValueError("clip: give at least one of min and max")
        low = min._data if isinstance(min, Tensor) else min
        high = max._data if isinstance(max, Tensor) else max
        source = self
        if self._data.dtype.kind != "f" and any(
                np.asarray(bound).dtype.kind == "f" for bound in (low, high) if bound is not None):
            source = _as_float(self)                 # float bounds make floats (PyTorch)
        return autograd.run_op(autograd.ClipBackward, source, low=low, high=high)

    clamp = clip

    def maximum(self, other):
        """Elementwise maximum; at ties the gradient is split equally."""
        a, b = _operands(self, other)
        return autograd.run_op(autograd.MaximumBackward, a, b)

    def minimum(self, other):
        """Elementwise minimum; at ties the gradient is split equally."""
        a, b = _operands(self, other)
        return autograd.run_op(autograd.MinimumBackward, a, b)

    # ----- reductions ---------------------------------------------------------------------------
    # ``out``/``dtype`` let NumPy's np.sum(t), np.mean(t), np.max(t)... call these methods.
    def sum(self, axis=None, keepdims=False, dim=None, dtype=None, out=None):
        result = autograd.run_op(autograd.SumBackward, self, axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, dtype, out)

    def mean(self, axis=None, keepdims=False, dim=None, dtype=None, out=None):
        result = autograd.run_op(autograd.MeanBackward, _floating(self), axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, dtype, out)

    def max(self, axis=None, keepdims=False, dim=None, out=None):
        """Largest value; the gradient is shared equally among tied maxima."""
        result = autograd.run_op(autograd.MaxBackward, self, axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, None, out)

    def min(self, axis=None, keepdims=False, dim=None, out=None):
        """Smallest value; the gradient is shared equally among tied minima."""
        result = autograd.run_op(autograd.MinBackward, self, axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, None, out)

    amax = max
    amin = min

    def var(self, axis=None, keepdims=False, dim=None, correction=0, dtype=None, out=None,
            ddof=None):
        """Variance ``sum((x - mean)^2) / (N - correction)``; population variance by default
        (``ddof`` is NumPy's name for ``correction``, so ``np.var(t)`` works too)."""
        result = autograd.run_op(autograd.VarBackward, _floating(self), axis=_axis(axis, dim), keepdims=keepdims,
                        correction=correction if ddof is None else ddof)
        return _numpy_reduction_result(result, dtype, out)

    def std(self, axis=None, keepdims=False, dim=None, correction=0, dtype=None, out=None,
            ddof=None):
        """Standard deviation ``sqrt(var(...))``; its gradient is 0 where it is 0 (as PyTorch)."""
        result = autograd.run_op(autograd.StdBackward, _floating(self), axis=_axis(axis, dim), keepdims=keepdims,
                        correction=correction if ddof is None else ddof)
        return _numpy_reduction_result(result, dtype, out)

    def any(self, axis=None, keepdims=False, dim=None, out=None):
        """True where any element (over ``axis``) is nonzero: a bool Tensor, no gradient."""
        result = autograd.run_numpy(np.any, self, axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, None, out)

    def all(self, axis=None, keepdims=False, dim=None, out=None):
        """True where all elements (over ``axis``) are nonzero: a bool Tensor, no gradient."""
        result = autograd.run_numpy(np.all, self, axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, None, out)

    def argmax(self, axis=None, keepdims=False, dim=None, out=None):
        _no_out("argmax", out)
        return autograd.run_numpy(np.argmax, self, axis=_axis(axis, dim), keepdims=keepdims)

    def argmin(self, axis=None, keepdims=False, dim=None, out=None):
        _no_out("argmin", out)
        return autograd.run_numpy(np.argmin, self, axis=_axis(axis, dim), keepdims=keepdims)

    # ----- shape ---------------------------------------------------------------------------------
    def reshape(self, *shape):
        """Same elements, new shape; accepts ints or one tuple, and -1 for one inferred size."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return autograd.run_op(autograd.ReshapeBackward, self, shape=shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge axes ``start_dim..end_dim`` (both included) into one; a 0-d tensor becomes
        shape (1,). IndexError for an axis out of range, ValueError when ``start_dim`` comes
        after ``end_dim`` (PyTorch's rules)."""
        start, end = _axes_tuple((_dim(start_dim), _dim(end_dim)), max(self.ndim, 1))
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                             f"for a tensor with {self.ndim} dims")
        if self.ndim == 0:
            return self.reshape(1)
        merged = int(np.prod(self.shape[start:end + 1]))
        return self.reshape(self.shape[:start] + (merged,) + self.shape[end + 1:])

    def squeeze(self, axis=None, dim=None):
        """Remove size-1 axes: all of them, or those among ``axis`` (others stay, as in PyTorch)."""
        axis = _axis(axis, dim)
        shape = self.shape
        if axis is None:
            new_shape = tuple(n for n in shape if n != 1)
        elif self.ndim == 0:
            _axes_tuple(axis, 1)                         # 0 or -1 are valid, as in PyTorch
            new_shape = ()
        else:
            axes = _axes_tuple(axis, self.ndim)
            new_shape = tuple(n for i, n in enumerate(shape) if i not in axes or n != 1)
        return self.reshape(new_shape)

    def unsqueeze(self, axis=None, dim=None):
        """Insert a size-1 axis at position ``axis``."""
        axis = _axis(axis, dim)
        if axis is None:
            raise TypeError("unsqueeze() needs an axis")
        ndim = self.ndim + 1
        if not -ndim <= axis < ndim:
            raise IndexError(f"unsqueeze: axis {axis} out of range for a result with {ndim} dims")
        axis %= ndim
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def transpose(self, dim0=None, dim1=None):
        """Swap two axes (by default the last two). TypeError for one dim without the other or
        a dim that is not an int (a bool included, as in PyTorch)."""
        if dim0 is not None and dim1 is not None:
            dim0, dim1 = _dim(dim0), _dim(dim1)
        return autograd.run_op(autograd.TransposeBackward, self, dim0=dim0, dim1=dim1)

    def permute(self, *axes):
        """Reorder the axes: ``out.shape[i] == self.shape[axes[i]]``."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return autograd.run_op(autograd.PermuteBackward, self, axes=axes)

    def expand(self, *shape):
        """Broadcast to ``shape`` (NumPy broadcasting rules; -1 keeps a size)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        offset = len(shape) - self.ndim
        shape = tuple(self.shape[i - offset] if n == -1 and i >= offset else n
                      for i, n in enumerate(shape))
        return autograd.run_op(autograd.ExpandBackward, self, shape=shape)

    broadcast_to = expand

    # ----- indexing -------------------------------------------------------------------------------
    def __getitem__(self, key):
        return autograd.run_op(autograd.SliceBackward, self, key=_index_key(key))

    def __setitem__(self, key, value):
        """``x[key] = value`` in place; differentiable (x's history is kept) like PyTorch."""
        key = _index_key(key)
        if self._starts_inplace(value, "x[...] = value"):
            before = self._snapshot()
            before, value = (before, before) if value is self else _operands(before, value)
            self._finish_inplace(autograd.run_op(autograd.SetItemBackward, before, value, key=key), "x[...] = value")
        else:
            self._data[key] = value._data if isinstance(value, Tensor) else value
            inplace.note_inplace(self, "x[...] = value")

    # ----- in-place arithmetic ----------------------------------------------------------------------
    def __iadd__(self, other):
        return self._inplace(autograd.AddBackward, other, "+=")

    def __isub__(self, other):
        return self._inplace(autograd.SubBackward, other, "-=")

    def __imul__(self, other):
        return self._inplace(autograd.MulBackward, other, "*=")

    def __itruediv__(self, other):
        return self._inplace(autograd.DivBackward, other, "/=")

    def _inplace(self, op, other, symbol):
        """Compute ``self <op> other`` and write it into self's own array (PyTorch's ``x += y``).

        Backward refuses to use values an earlier op saved from self before the change (see
        ``autograd.note_inplace``); the new op works on a snapshot, so its gradient is exact.
        """
        if self._starts_inplace(other, symbol):
            before = self._snapshot()
            before, other = (before, before) if other is self else _operands(before, other)
            self._finish_inplace(autograd.run_op(op, before, other), symbol)
        else:
            with no_grad():
                result = autograd.run_op(op, *_operands(self, other))
            self._write(result._data, symbol)
            inplace.note_inplace(self, symbol)
        return self

    def _starts_inplace(self, other, symbol):
        """True when an in-place op must be recorded; a leaf that requires grad refuses."""
        if _tracing.recording:
            note(f"the in-place op {symbol}")
        recording = is_grad_enabled() and (
            self.requires_grad or (isinstance(other, Tensor) and other.requires_grad))
        if recording and self.grad_fn is None and self.requires_grad:
            raise RuntimeError(
                f"a leaf tensor that requires grad cannot be changed in place ({symbol}): "
                f"write an out-of-place op (x = x + y), or update it under no_grad() as "
                f"optimizers do")
        if recording and self.grad_fn is None and isinstance(self._data.base, np.ndarray):
            raise RuntimeError(
                f"in-place {symbol} of a value that requires grad into a view of another "
                f"tensor's memory (e.g. x[i] of a tensor that does not require grad) cannot "
                f"be recorded: assign into the base tensor itself (x[i, j] = value), or "
                f"build the result out of place")
        if recording and self.grad_fn is not None and self.grad_fn.returns_view:
            raise RuntimeError(
                f"in-place {symbol} on a view (the result of {type(self.grad_fn).__name__}, "
                f"which shares memory with its input) is not supported by autograd: change "
                f"the base tensor instead, or clone() the view first")
        return recording

    def _snapshot(self):
        """A copy of this tensor as it is now, standing in for it in the graph."""
        before = Tensor._make(self._data.copy(), self.grad_fn)
        before.requires_grad = self.requires_grad
        if self.grad_fn is not None and self.grad_fn.output_data is self._data:
            self.grad_fn.output_data = before._data        # the node keeps the old values
        return before

    def _write(self, values, symbol):
        if values.shape != self._data.shape:
            raise ValueError(f"in-place {symbol}: the result has shape {values.shape}, which "
                             f"does not fit the tensor's shape {self._data.shape}")
        if not np.can_cast(values.dtype, self._data.dtype, casting="same_kind"):
            raise TypeError(f"in-place {symbol}: the result has dtype {values.dtype}, which "
                            f"cannot be stored in a tensor of dtype {self._data.dtype}")
        self._data[...] = values

    def _finish_inplace(self, result, symbol):
        self._write(result._data, symbol)
        inplace.note_inplace(self, symbol, new_grad_fn=result.grad_fn)


def _gradient_for(tensor, value):
    """``value`` as the ``.grad`` of ``tensor``: a Tensor of its shape and dtype."""
    if isinstance(value, Tensor):
        array = value._data
    elif isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
    else:
        raise TypeError(f"a gradient must be None, a Tensor or a NumPy array, got "
                        f"{type(value).__name__}")
    if array.shape != tensor._data.shape:
        raise ValueError(f"cannot assign a gradient of shape {array.shape} to a tensor of shape "
                         f"{tensor._data.shape}: they must match")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"a gradient must hold numbers, got an array of dtype {array.dtype}")
    dtype = tensor._data.dtype
    if isinstance(value, Tensor):
        return value if array.dtype == dtype else value.astype(dtype)
    return Tensor._make(array.astype(dtype))


# NumPy ufuncs that are one of our differentiable operators (see Tensor.__array_ufunc__)
_UFUNC_OPERATORS = {np.add: "add", np.subtract: "sub", np.multiply: "mul",
                    np.true_divide: "truediv", np.power: "pow", np.matmul: "matmul"}
_UFUNC_COMPARISONS = (np.equal, np.not_equal, np.less, np.less_equal, np.greater,
                      np.greater_equal)


def _numpy_reduction_result(result, dtype, out):
    if out is not None:
        raise TypeError("tinytorch reductions do not write into out=; use the returned tensor")
    return result if dtype is None else result.astype(dtype)


def _axis(axis, dim):
    """Accept PyTorch's ``dim=`` as an alias of ``axis=``."""
    if dim is not None:
        if axis is not None:
            raise TypeError("give axis or dim, not both")
        return dim
    return axis


def _dim(dim):
    """``dim`` as an int; TypeError for a bool or a non-integer (PyTorch's rule for dims)."""
    if isinstance(dim, bool):
        raise TypeError(f"a dim must be an int, not bool ({dim})")
    return operator.index(dim)


def _axes_tuple(axis, ndim):
    """Normalise an int or tuple of ints to a tuple of non-negative axes."""
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    result = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise IndexError(f"axis {a} is out of range for a tensor with {ndim} dims")
        result.append(a % ndim if ndim else 0)
    return tuple(result)


def _index_key(key):
    """Turn Tensors inside an index into NumPy index arrays.

    A float tensor holding whole numbers (TinyTorch tensors are float32 by default) is read as
    integer indices; a bool tensor is a mask.
    """
    if isinstance(key, tuple):
        return tuple(_index_key(k) for k in key)
    if isinstance(key, Tensor):       # a copy: the graph keeps the key, later edits must not
        return autograd.run_numpy(_index_array, key)._data        # change it (an op: compile)
    if isinstance(key, list):
        key = np.asarray(key)
    return _index_array(key) if isinstance(key, np.ndarray) and key.dtype.kind == "f" else key


def _index_array(key):
    """A copy of an index array, floats holding whole numbers read as integers."""
    if key.dtype.kind != "f":
        return key.copy()
    as_int = key.astype(np.int64)
    if not np.array_equal(as_int, key):
        raise IndexError("tensors used as indices must hold integers (or bools for masks)")
    return as_int


# ----- creation functions ----------------------------------------------------------------------

_rng = np.random.default_rng()


@replayed_as_a_call
def manual_seed(seed):
    """Seed tinytorch's random number generator (randn, rand, layer initialisation, dropout)."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng():
    """The generator used by randn, rand and the layers (reseeded by :func:`manual_seed`)."""
    return _rng


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _creation_dtype(dtype):
    return _default_dtype if dtype is None else np.dtype(dtype)


def tensor(data, requires_grad=False, dtype=None):
    """Create a Tensor (same as ``Tensor(data, requires_grad, dtype)``)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=None, requires_grad=False):
    """A tensor of zeros: ``zeros(2, 3)`` or ``zeros((2, 3))``."""
    return Tensor._make(np.zeros(_shape_args(shape), _creation_dtype(dtype))).requires_grad_(requires_grad)


def ones(*shape, dtype=None, requires_grad=False):
    """A tensor of ones: ``ones(2, 3)`` or ``ones((2, 3))``."""
    return Tensor._make(np.ones(_shape_args(shape), _creation_dtype(dtype))).requires_grad_(requires_grad)


def full(shape, fill_value, dtype=None, requires_grad=False):
    """A tensor of ``shape`` filled with ``fill_value``."""
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    return Tensor._make(np.full(shape, fill_value, _creation_dtype(dtype))).requires_grad_(requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    """Zeros with the shape (and dtype, unless given) of ``t``."""
    return Tensor._make(np.zeros(np.shape(_array_of(t)), dtype or _array_of(t).dtype)).requires_grad_(requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    """Ones with the shape (and dtype, unless given) of ``t``."""
    return Tensor._make(np.ones(np.shape(_array_of(t)), dtype or _array_of(t).dtype)).requires_grad_(requires_grad)


def randn(*shape, dtype=None, requires_grad=False):
    """Standard normal samples: ``randn(2, 3)``."""
    note("tt.randn (random numbers drawn outside an op)")
    data = _rng.standard_normal(_shape_args(shape)).astype(_creation_dtype(dtype))
    return Tensor._make(data).requires_grad_(requires_grad)


def rand(*shape, dtype=None, requires_grad=False):
    """Uniform samples in [0, 1): ``rand(2, 3)``."""
    note("tt.rand (random numbers drawn outside an op)")
    data = _rng.random(_shape_args(shape)).astype(_creation_dtype(dtype))
    return Tensor._make(data).requires_grad_(requires_grad)


def arange(start, stop=None, step=1, dtype=None, requires_grad=False):
    """Evenly spaced values in [start, stop), like ``np.arange`` (default float dtype)."""
    data = np.arange(start, stop, step) if stop is not None else np.arange(start)
    return Tensor._make(data.astype(_creation_dtype(dtype))).requires_grad_(requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    """The identity matrix (``n x m``)."""
    return Tensor._make(np.eye(n, m, dtype=_creation_dtype(dtype))).requires_grad_(requires_grad)


def _array_of(t):
    return t._data if isinstance(t, Tensor) else np.asarray(t)


def concatenate(tensors, axis=None, dim=None):
    """Join tensors along an existing axis (default 0; ``dim=`` is an alias) (differentiable)."""
    tensors = _join_operands(tensors)
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    return autograd.run_op(autograd.ConcatenateBackward, *tensors, axis=_axis_or_zero(axis, dim))


cat = concatenate


def stack(tensors, axis=None, dim=None):
    """Join same-shaped tensors along a new axis (default 0; ``dim=`` is an alias) (differentiable)."""
    tensors = _join_operands(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    return autograd.run_op(autograd.StackBackward, *tensors, axis=_axis_or_zero(axis, dim))


def _axis_or_zero(axis, dim):
    """The joining axis of concatenate/stack: ``axis`` or its alias ``dim``, 0 when neither."""
    axis = _axis(axis, dim)
    return 0 if axis is None else axis


def where(condition, a, b):
    """Elementwise ``a`` where ``condition`` is true, else ``b`` (differentiable in a and b)."""
    condition = (autograd.run_numpy(np.array, condition, dtype=bool)._data   # a copy: the graph
                 if isinstance(condition, Tensor) else np.array(condition, dtype=bool))  # keeps it
    if isinstance(a, Tensor):
        a, b = _operands(a, b)
    elif isinstance(b, Tensor):
        b, a = _operands(b, a)
    else:                            # two constants: nothing to differentiate
        return Tensor(np.where(condition, a, b))
    return autograd.run_op(autograd.WhereBackward, a, b, condition=condition)


def _join_operands(values):
    """The inputs of concatenate/stack as Tensors: arrays and lists among them take the dtype
    of the first float Tensor, as an operand of an arithmetic op does (see :func:`_operand`),
    and integer tensors joined with a float one take its dtype (as in PyTorch)."""
    values = list(values)
    like = next((v for v in values if isinstance(v, Tensor) and v.dtype.type in _FLOAT_DTYPES), None)
    if like is None:
        return [v if isinstance(v, Tensor) else Tensor(v) for v in values]
    return [_promoted(like, v)[1] if isinstance(v, Tensor) else Tensor(v, dtype=like.dtype)
            for v in values]


def _floating(tensor):
    """The input of a float-valued function (exp, sqrt, mean...): an integer or bool tensor
    as the default float dtype, as PyTorch computes them; a float tensor as it is."""
    return tensor if tensor._data.dtype.kind == "f" else _as_float(tensor)


def _tensors_in(value):
    """The Tensors in a nest of tuples, lists and dicts (NumPy function arguments)."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)


def _values_in(value):
    """``value`` with each Tensor in it replaced by its array (see :func:`_tensors_in`)."""
    if isinstance(value, Tensor):
        return value._data
    if isinstance(value, (tuple, list)):
        return type(value)(_values_in(item) for item in value)
    if isinstance(value, dict):
        return {key: _values_in(item) for key, item in value.items()}
    return value


def _no_out(name, out):
    if out is not None:
        raise TypeError(f"np.{name}(..., out=) on a Tensor: tinytorch ops do not write into "
                        f"out=; use the returned tensor")


def _numpy_method(name, *numpy_order):
    """A NumPy function ``np.name(a, *numpy_order, **keywords)`` as the Tensor method ``name``
    (``numpy_order`` lists NumPy's positional parameters after ``a``); NotImplemented when
    ``a`` is not a Tensor (``np.sum([t1, t2])``), which falls back to NumPy on the values."""
    def run(a, *args, **kwargs):
        if not isinstance(a, Tensor):
            return NotImplemented
        if len(args) > len(numpy_order):
            raise TypeError(f"np.{name}: too many positional arguments")
        kwargs.update(zip(numpy_order, args))
        return getattr(a, name)(**kwargs)
    return run


def _numpy_reshape(a, shape, order="C", copy=None):
    if order != "C":
        raise ValueError(f"np.reshape on a Tensor supports order='C' only, got {order!r}")
    return a.reshape(shape)


def _numpy_transpose(a, axes=None):
    return a.T if axes is None else a.permute(*axes)


def _numpy_clip(a, a_min=None, a_max=None, out=None, *, min=None, max=None):
    _no_out("clip", out)
    return a.clip(a_min if min is None else min, a_max if max is None else max)


def _numpy_join(join):
    def run(arrays, axis=0, out=None, **kwargs):
        _no_out(join.__name__, out)
        if axis is None:                              # NumPy: join the flattened arrays
            arrays = [a.reshape(-1) if isinstance(a, Tensor) else np.ravel(a) for a in arrays]
            axis = 0
        return join(arrays, axis=axis, **kwargs)
    return run


def _numpy_where(condition, x=None, y=None):
    if x is None and y is None:
        return NotImplemented                         # np.where(c): indices, not differentiable
    return where(condition, x, y)


def _numpy_dot(a, b, out=None):
    _no_out("dot", out)
    if not 1 <= np.ndim(a) <= 2 or not 1 <= np.ndim(b) <= 2:
        return NotImplemented                         # scalars and N-d: NumPy's own dot
    return a @ b if isinstance(a, Tensor) else b.__rmatmul__(a)


# NumPy functions that are tinytorch ops (see Tensor.__array_function__)
_NUMPY_FUNCTIONS = {
    np.sum: _numpy_method("sum", "axis", "dtype", "out"),
    np.mean: _numpy_method("mean", "axis", "dtype", "out"),
    np.max: _numpy_method("max", "axis", "out"), np.amax: _numpy_method("max", "axis", "out"),
    np.min: _numpy_method("min", "axis", "out"), np.amin: _numpy_method("min", "axis", "out"),
    np.var: _numpy_method("var", "axis", "dtype", "out", "ddof"),
    np.std: _numpy_method("std", "axis", "dtype", "out", "ddof"),
    np.any: _numpy_method("any", "axis", "out"), np.all: _numpy_method("all", "axis", "out"),
    np.argmax: _numpy_method("argmax", "axis", "out"),
    np.argmin: _numpy_method("argmin", "axis", "out"),
    np.squeeze: _numpy_method("squeeze", "axis"),
    np.reshape: _numpy_reshape, np.transpose: _numpy_transpose, np.clip: _numpy_clip,
    np.concatenate: _numpy_join(concatenate), np.stack: _numpy_join(stack),
    np.where: _numpy_where, np.dot: _numpy_dot,
    np.ndim: lambda a: a.ndim, np.shape: lambda a: a.shape,
    np.size: lambda a, axis=None: a.size if axis is None else a.shape[axis],
}
