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

import weakref

import numpy as np

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
        return np.array(data.data, dtype=dtype)
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
    """The other operand of an op on the Tensor ``like``, ready for ``run_op``.

    Python numbers stay plain scalars (NumPy then keeps the tensor's dtype). Arrays, lists and
    NumPy scalars become Tensors of ``like``'s dtype when ``like`` is a float Tensor, as a
    number would: ``x64 * np_array`` stays exact and ``x32 + np_array`` stays float32.
    """
    kind = type(value)
    if kind is Tensor or kind is float or kind is int:
        return value
    if isinstance(value, Tensor) or (isinstance(value, (int, float)) and not isinstance(value, np.generic)):
        return value
    if isinstance(like, Tensor) and like.dtype.type in _FLOAT_DTYPES:
        return Tensor(value, dtype=like.dtype)
    return Tensor(value)


_constants = {}       # (Python number, float dtype) -> the number as a read-only 0-d array


def _arithmetic_operand(value, like):
    """:func:`_operand` for ``+ - * /``: a Python number becomes a 0-d array of ``like``'s dtype.

    NumPy gives the same result for ``x + 0.1`` and ``x + np.array(0.1, x.dtype)``, but takes
    half the time for the second (on small arrays), in forward and again in the gradient
    rules. The arrays are cached and read-only. Zeros (whose sign matters), NaN, numbers
    that might overflow, and tensors that are not float32 or float64 keep the plain number.
    """
    kind = type(value)
    if kind is Tensor:
        return value
    if kind is not float and kind is not int:
        return _operand(value, like)
    dtype = like.data.dtype
    constant = _constants.get((value, dtype))
    if constant is not None:
        return constant
    if dtype.type not in (np.float32, np.float64) or value == 0 or not -1e30 < value < 1e30:
        return value
    constant = np.array(value, dtype=dtype)
    constant.flags.writeable = False
    if len(_constants) >= 1024:
        _constants.clear()
    _constants[(value, dtype)] = constant
    return constant


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

    __slots__ = ("data", "requires_grad", "grad", "grad_fn", "__weakref__")
    __array_ufunc__ = None      # NumPy defers to our reflected operators: ndarray + Tensor works

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _to_array(data, dtype)
        self.grad = None
        self.grad_fn = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _make(cls, data, grad_fn=None):
        """Wrap an op's result array (no copy, no conversion); used by the engine and ops."""
        t = object.__new__(cls)
        t.data = data if type(data) is np.ndarray else np.asarray(data)
        t.grad = None
        t.grad_fn = grad_fn
        t.requires_grad = grad_fn is not None
        return t

    # ----- attributes ------------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        """Number of elements."""
        return self.data.size

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

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
        _autograd.backward([self], [gradient], retain_graph=retain_graph,
                           create_graph=create_graph)

    def zero_grad(self):
        """Forget the accumulated gradient (``grad`` becomes None)."""
        self.grad = None

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place (leaves only) and return self."""
        if requires_grad and self.data.dtype.type not in _FLOAT_DTYPES:
            raise TypeError(f"only floating-point tensors can require gradients, "
                            f"but this tensor has dtype {self.data.dtype}")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError("requires_grad_(False) is only allowed on leaves; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep it)."""
        node = self.grad_fn
        if node is None:
            return
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        if node.hooks is None:
            node.hooks = []
        if not any(isinstance(h, _RetainGrad) for h in node.hooks):
            node.hooks.append(_RetainGrad(self))

    def register_hook(self, hook):
        """Call ``hook(grad)`` each time this tensor's gradient is computed in backward.

        The hook gets the gradient as a Tensor and may return a replacement (same shape).
        Returns a handle whose ``remove()`` unregisters it. Hooks run in registration order.

        >>> handle = x.register_hook(lambda g: g * 2)    # doubles the gradient reaching x
        >>> handle.remove()
        """
        return _autograd.register_hook(self, hook)

    def detach(self):
        """A new leaf sharing this tensor's data, cut off from the graph."""
        return Tensor._make(self.data)

    def clone(self):
        """A differentiable copy."""
        return run_op(CloneBackward, self)

    copy = clone

    # ----- conversion --------------------------------------------------------------------------
    def numpy(self):
        """The underlying NumPy array (shared, not copied)."""
        return self.data

    def item(self):
        """The single element as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with exactly one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def __array__(self, dtype=None, copy=None):
        if dtype is None:
            return self.data.copy() if copy else self.data
        return self.data.astype(dtype, copy=bool(copy))

    def astype(self, dtype):
        """This tensor converted to ``dtype`` (differentiable between float dtypes)."""
        dtype = np.dtype(dtype)
        if dtype.type not in _FLOAT_DTYPES:
            return Tensor._make(self.data.astype(dtype))
        return run_op(CastBackward, self, dtype=dtype)

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.data.size} elements is "
                             f"ambiguous; use .any() / .all() style reductions")
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.data.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only one-element integer tensors can be used as an index")
        return int(self.data.item())

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    __hash__ = object.__hash__

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        extra = ""
        if self.grad_fn is not None:
            extra = f", grad_fn={self.grad_fn!r}"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        return f"Tensor({body}, dtype={self.data.dtype}{extra})"

    # ----- arithmetic ---------------------------------------------------------------------------
    def __add__(self, other):
        return run_op(AddBackward, self, _arithmetic_operand(other, self))

    def __radd__(self, other):
        return run_op(AddBackward, _arithmetic_operand(other, self), self)

    def __sub__(self, other):
        return run_op(SubBackward, self, _arithmetic_operand(other, self))

    def __rsub__(self, other):
        return run_op(SubBackward, _arithmetic_operand(other, self), self)

    def __mul__(self, other):
        return run_op(MulBackward, self, _arithmetic_operand(other, self))

    def __rmul__(self, other):
        return run_op(MulBackward, _arithmetic_operand(other, self), self)

    def __truediv__(self, other):
        return run_op(DivBackward, self, _arithmetic_operand(other, self))

    def __rtruediv__(self, other):
        return run_op(DivBackward, _arithmetic_operand(other, self), self)

    def __pow__(self, exponent):
        return run_op(PowBackward, self, _operand(exponent, self))

    def __rpow__(self, base):
        return run_op(PowBackward, _operand(base, self), self)

    def __matmul__(self, other):
        return run_op(MatmulBackward, self, _operand(other, self))

    def __rmatmul__(self, other):
        return run_op(MatmulBackward, _operand(other, self), self)

    def __neg__(self):
        return run_op(NegBackward, self)

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
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._make(ufunc(self.data, other))

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
    def exp(self):
        return run_op(ExpBackward, self)

    def log(self):
        return run_op(LogBackward, self)

    def sqrt(self):
        return run_op(SqrtBackward, self)

    def abs(self):
        return run_op(AbsBackward, self)

    def tanh(self):
        return run_op(TanhBackward, self)

    def sigmoid(self):
        return run_op(SigmoidBackward, self)

    def relu(self):
        return run_op(ReLUBackward, self)

    def sin(self):
        return run_op(SinBackward, self)

    def cos(self):
        return run_op(CosBackward, self)

    def clip(self, min=None, max=None):
        """Limit values to [min, max]; the gradient flows where min <= x <= max.

        The bounds (numbers, arrays or Tensors) are constants: no gradient flows to them.
        """
        if min is None and max is None:
            raise ValueError("clip: give at least one of min and max")
        low = min.data if isinstance(min, Tensor) else min
        high = max.data if isinstance(max, Tensor) else max
        return run_op(ClipBackward, self, low=low, high=high)

    clamp = clip

    def maximum(self, other):
        """Elementwise maximum; at ties the gradient is split equally."""
        return run_op(MaximumBackward, self, _operand(other, self))

    def minimum(self, other):
        """Elementwise minimum; at ties the gradient is split equally."""
        return run_op(MinimumBackward, self, _operand(other, self))

    # ----- reductions ---------------------------------------------------------------------------
    # ``out``/``dtype`` let NumPy's np.sum(t), np.mean(t), np.max(t)... call these methods.
    def sum(self, axis=None, keepdims=False, dim=None, dtype=None, out=None):
        result = run_op(SumBackward, self, axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, dtype, out)

    def mean(self, axis=None, keepdims=False, dim=None, dtype=None, out=None):
        result = run_op(MeanBackward, self, axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, dtype, out)

    def max(self, axis=None, keepdims=False, dim=None, out=None):
        """Largest value; the gradient is shared equally among tied maxima."""
        result = run_op(MaxBackward, self, axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, None, out)

    def min(self, axis=None, keepdims=False, dim=None, out=None):
        """Smallest value; the gradient is shared equally among tied minima."""
        result = run_op(MinBackward, self, axis=_axis(axis, dim), keepdims=keepdims)
        return _numpy_reduction_result(result, None, out)

    amax = max
    amin = min

    def var(self, axis=None, keepdims=False, dim=None, correction=0):
        """Variance ``sum((x - mean)^2) / (N - correction)``; population variance by default."""
        return run_op(VarBackward, self, axis=_axis(axis, dim), keepdims=keepdims,
                      correction=correction)

    def std(self, axis=None, keepdims=False, dim=None, correction=0):
        """Standard deviation ``sqrt(var(...))``; its gradient is 0 where it is 0 (as PyTorch)."""
        return run_op(StdBackward, self, axis=_axis(axis, dim), keepdims=keepdims,
                      correction=correction)

    def argmax(self, axis=None, keepdims=False, dim=None):
        return Tensor._make(np.argmax(self.data, axis=_axis(axis, dim), keepdims=keepdims))

    def argmin(self, axis=None, keepdims=False, dim=None):
        return Tensor._make(np.argmin(self.data, axis=_axis(axis, dim), keepdims=keepdims))

    # ----- shape ---------------------------------------------------------------------------------
    def reshape(self, *shape):
        """Same elements, new shape; accepts ints or one tuple, and -1 for one inferred size."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return run_op(ReshapeBackward, self, shape=shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge axes ``start_dim..end_dim`` into one."""
        if self.ndim == 0:
            return self.reshape(1)
        start, end = start_dim % self.ndim, end_dim % self.ndim
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
        """Swap two axes (by default the last two)."""
        return run_op(TransposeBackward, self, dim0=dim0, dim1=dim1)

    def permute(self, *axes):
        """Reorder the axes: ``out.shape[i] == self.shape[axes[i]]``."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return run_op(PermuteBackward, self, axes=axes)

    def expand(self, *shape):
        """Broadcast to ``shape`` (NumPy broadcasting rules; -1 keeps a size)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        offset = len(shape) - self.ndim
        shape = tuple(self.shape[i - offset] if n == -1 and i >= offset else n
                      for i, n in enumerate(shape))
        return run_op(ExpandBackward, self, shape=shape)

    broadcast_to = expand

    # ----- indexing -------------------------------------------------------------------------------
    def __getitem__(self, key):
        return run_op(SliceBackward, self, key=_index_key(key))

    def __setitem__(self, key, value):
        """``x[key] = value`` in place; differentiable (x's history is kept) like PyTorch."""
        key = _index_key(key)
        if self._starts_inplace(value, "x[...] = value"):
            before = self._snapshot()
            value = before if value is self else _operand(value, self)
            self._finish_inplace(run_op(SetItemBackward, before, value, key=key), "x[...] = value")
        else:
            self.data[key] = value.data if isinstance(value, Tensor) else value
            _autograd.note_inplace(self, "x[...] = value")

    # ----- in-place arithmetic ----------------------------------------------------------------------
    def __iadd__(self, other):
        return self._inplace(AddBackward, other, "+=")

    def __isub__(self, other):
        return self._inplace(SubBackward, other, "-=")

    def __imul__(self, other):
        return self._inplace(MulBackward, other, "*=")

    def __itruediv__(self, other):
        return self._inplace(DivBackward, other, "/=")

    def _inplace(self, op, other, symbol):
        """Compute ``self <op> other`` and write it into self's own array (PyTorch's ``x += y``).

        Backward refuses to use values an earlier op saved from self before the change (see
        ``autograd.note_inplace``); the new op works on a snapshot, so its gradient is exact.
        """
        if self._starts_inplace(other, symbol):
            before = self._snapshot()
            other = before if other is self else _operand(other, self)
            self._finish_inplace(run_op(op, before, other), symbol)
        else:
            with _autograd.no_grad():
                result = run_op(op, self, _operand(other, self))
            self._write(result.data, symbol)
            _autograd.note_inplace(self, symbol)
        return self

    def _starts_inplace(self, other, symbol):
        """True when an in-place op must be recorded; a leaf that requires grad refuses."""
        recording = _autograd.is_grad_enabled() and (
            self.requires_grad or (isinstance(other, Tensor) and other.requires_grad))
        if recording and self.grad_fn is None and self.requires_grad:
            raise RuntimeError(
                f"a leaf tensor that requires grad cannot be changed in place ({symbol}): "
                f"write an out-of-place op (x = x + y), or update it under no_grad() as "
                f"optimizers do")
        if recording and self.grad_fn is None and isinstance(self.data.base, np.ndarray):
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
        before = Tensor._make(self.data.copy(), self.grad_fn)
        before.requires_grad = self.requires_grad
        if self.grad_fn is not None and self.grad_fn.output_data is self.data:
            self.grad_fn.output_data = before.data        # the node keeps the old values
        return before

    def _write(self, values, symbol):
        if values.shape != self.data.shape:
            raise ValueError(f"in-place {symbol}: the result has shape {values.shape}, which "
                             f"does not fit the tensor's shape {self.data.shape}")
        if not np.can_cast(values.dtype, self.data.dtype, casting="same_kind"):
            raise TypeError(f"in-place {symbol}: the result has dtype {values.dtype}, which "
                            f"cannot be stored in a tensor of dtype {self.data.dtype}")
        self.data[...] = values

    def _finish_inplace(self, result, symbol):
        self._write(result.data, symbol)
        _autograd.note_inplace(self, symbol, new_grad_fn=result.grad_fn)


class _RetainGrad:
    """Node hook that stores the incoming gradient on the (non-leaf) tensor that asked."""

    __slots__ = ("tensor_ref",)
    runs_last = True                 # after the user's hooks, which may replace the gradient

    def __init__(self, tensor):
        self.tensor_ref = weakref.ref(tensor)

    def __call__(self, grad):
        tensor = self.tensor_ref()
        if tensor is not None:
            grad = grad.data if isinstance(grad, Tensor) else grad
            if tensor.grad is None:
                tensor.grad = Tensor._make(np.array(grad, dtype=tensor.dtype))
            else:
                tensor.grad.data = tensor.grad.data + grad


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
    if isinstance(key, Tensor):
        key = key.data.copy()        # the graph keeps the key: later edits must not change it
    elif isinstance(key, list):
        key = np.asarray(key)
    if isinstance(key, np.ndarray) and key.dtype.kind == "f":
        as_int = key.astype(np.int64)
        if not np.array_equal(as_int, key):
            raise IndexError("tensors used as indices must hold integers (or bools for masks)")
        key = as_int
    return key


# ----- creation functions ----------------------------------------------------------------------

_rng = np.random.default_rng()


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
    return Tensor._make(np.zeros(np.shape(_data(t)), dtype or _data(t).dtype)).requires_grad_(requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    """Ones with the shape (and dtype, unless given) of ``t``."""
    return Tensor._make(np.ones(np.shape(_data(t)), dtype or _data(t).dtype)).requires_grad_(requires_grad)


def randn(*shape, dtype=None, requires_grad=False):
    """Standard normal samples: ``randn(2, 3)``."""
    data = _rng.standard_normal(_shape_args(shape)).astype(_creation_dtype(dtype))
    return Tensor._make(data).requires_grad_(requires_grad)


def rand(*shape, dtype=None, requires_grad=False):
    """Uniform samples in [0, 1): ``rand(2, 3)``."""
    data = _rng.random(_shape_args(shape)).astype(_creation_dtype(dtype))
    return Tensor._make(data).requires_grad_(requires_grad)


def arange(start, stop=None, step=1, dtype=None, requires_grad=False):
    """Evenly spaced values in [start, stop), like ``np.arange`` (default float dtype)."""
    data = np.arange(start, stop, step) if stop is not None else np.arange(start)
    return Tensor._make(data.astype(_creation_dtype(dtype))).requires_grad_(requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    """The identity matrix (``n x m``)."""
    return Tensor._make(np.eye(n, m, dtype=_creation_dtype(dtype))).requires_grad_(requires_grad)


def _data(t):
    return t.data if isinstance(t, Tensor) else np.asarray(t)


def concatenate(tensors, axis=None, dim=None):
    """Join tensors along an existing axis (default 0; ``dim=`` is an alias) (differentiable)."""
    tensors = _join_operands(tensors)
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    return run_op(ConcatenateBackward, *tensors, axis=_axis_or_zero(axis, dim))


cat = concatenate


def stack(tensors, axis=None, dim=None):
    """Join same-shaped tensors along a new axis (default 0; ``dim=`` is an alias) (differentiable)."""
    tensors = _join_operands(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    return run_op(StackBackward, *tensors, axis=_axis_or_zero(axis, dim))


def _axis_or_zero(axis, dim):
    """The joining axis of concatenate/stack: ``axis`` or its alias ``dim``, 0 when neither."""
    axis = _axis(axis, dim)
    return 0 if axis is None else axis


def where(condition, a, b):
    """Elementwise ``a`` where ``condition`` is true, else ``b`` (differentiable in a and b)."""
    condition = np.array(_data(condition), dtype=bool)     # a copy: the graph keeps it
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    if like is None:                 # two constants: nothing to differentiate
        return Tensor(np.where(condition, a, b))
    return run_op(WhereBackward, _operand(a, like), _operand(b, like), condition=condition)


def _join_operands(values):
    """The inputs of concatenate/stack as Tensors: arrays and lists among them take the dtype
    of the first float Tensor, as an operand of an arithmetic op does (see :func:`_operand`)."""
    values = list(values)
    like = next((v for v in values if isinstance(v, Tensor) and v.dtype.type in _FLOAT_DTYPES), None)
    return [v if isinstance(v, Tensor) else Tensor(v, dtype=None if like is None else like.dtype)
            for v in values]


# The op classes and the engine need Tensor, so they are imported once it exists.
from tinytorch.core import autograd as _autograd  # noqa: E402
from tinytorch.core.autograd import run_op  # noqa: E402
from tinytorch.core.ops import (  # noqa: E402
    AbsBackward, AddBackward, CastBackward, ClipBackward, CloneBackward, ConcatenateBackward,
    CosBackward, DivBackward, ExpandBackward, ExpBackward, LogBackward, MatmulBackward,
    MaxBackward, MaximumBackward, MeanBackward, MinBackward, MinimumBackward, MulBackward,
    NegBackward, PermuteBackward, PowBackward, ReLUBackward, ReshapeBackward, SigmoidBackward,
    SetItemBackward, SinBackward, SliceBackward, SqrtBackward, StackBackward, StdBackward,
    SubBackward, SumBackward, VarBackward,
    TanhBackward, TransposeBackward, WhereBackward,
)
