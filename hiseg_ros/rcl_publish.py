"""Serialized messages published through ``rcl`` itself: from any buffer, and without the GIL.

Why: rclpy's ``Publisher.publish(bytes)`` first converts the bytes into a C++ string (one more copy
of a 0.5-1.5 MB image) and holds the GIL while ``rcl`` and Fast DDS copy the message into shared
memory. ``rcl_publish_serialized_message`` called through :mod:`ctypes` takes the buffer where it
lies, and ctypes releases the GIL for the call, so the executor thread can take the next camera
frame meanwhile. (Publishing from a thread of its own as well, to draw the next output while DDS
copies this one, was measured slower on two cores: docs/BENCHMARKS.md.)

The rcl publisher is the one rclpy made (``Publisher.handle.pointer``, the address of its
``rcl_publisher_t``), held with ``with handle:`` for the call so rclpy cannot destroy it meanwhile.
Where ``librcl`` or that attribute is missing (another rclpy build), :func:`raw_publish` says why
and the caller keeps ``Publisher.publish(bytes)``: same bytes on the wire, one copy more.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import Any

__all__ = ["RawPublish", "raw_publish"]

RCL_RET_OK = 0


class _Allocator(ctypes.Structure):  # rcutils_allocator_t: four function pointers and a state pointer
    _fields_ = [
        ("allocate", ctypes.c_void_p),
        ("deallocate", ctypes.c_void_p),
        ("reallocate", ctypes.c_void_p),
        ("zero_allocate", ctypes.c_void_p),
        ("state", ctypes.c_void_p),
    ]


class _SerializedMessage(ctypes.Structure):  # rmw_serialized_message_t = rcutils_uint8_array_t
    _fields_ = [
        ("buffer", ctypes.c_void_p),
        ("buffer_length", ctypes.c_size_t),
        ("buffer_capacity", ctypes.c_size_t),
        ("allocator", _Allocator),
    ]


class _ErrorString(ctypes.Structure):  # rcutils_error_string_t: char str[1024]
    _fields_ = [("str", ctypes.c_char * 1024)]


@functools.cache
def _load_rcl() -> Any:
    lib = ctypes.CDLL("librcl.so")  # the library rclpy itself loaded: already in the process
    fn = lib.rcl_publish_serialized_message
    fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(_SerializedMessage), ctypes.c_void_p]
    fn.restype = ctypes.c_int
    lib.rcutils_get_error_string.restype = _ErrorString
    return lib


RawPublish = Callable[[Any], None]


def raw_publish(publisher: Any) -> tuple[RawPublish | None, str | None]:
    """``(publish, None)``: ``publish(buffer)`` sends a serialized message of ``publisher``'s type
    from any C-contiguous buffer (bytes, bytearray, numpy array), releasing the GIL while rcl and
    DDS copy it; ``(None, why)`` where this rclpy / rcl build offers no way to do that.
    Raises RuntimeError (with rcl's message) when rcl refuses a message."""
    try:
        lib = _load_rcl()
    except (OSError, AttributeError) as exc:
        return None, f"cannot load rcl_publish_serialized_message from librcl.so: {exc}"
    handle = publisher.handle
    if not isinstance(getattr(handle, "pointer", None), int):
        return None, f"{type(handle).__name__} has no integer 'pointer' (the rcl_publisher_t address)"
    fn = lib.rcl_publish_serialized_message

    def publish(data: Any) -> None:
        address, size, keep = _address(data)
        msg = _SerializedMessage(address, size, size)
        with handle:  # rclpy cannot destroy the publisher during the call
            ret = fn(handle.pointer, ctypes.byref(msg), None)
        if ret != RCL_RET_OK:
            why = lib.rcutils_get_error_string().str.decode(errors="replace")
            lib.rcutils_reset_error()
            raise RuntimeError(f"rcl_publish_serialized_message on {publisher.topic_name}: error {ret}: {why}")
        del keep  # the buffer had to live until here

    return publish, None


def _address(data: Any) -> tuple[int, int, Any]:
    """``(address, size, owner)`` of ``data``'s bytes where they lie; ``owner`` keeps them alive."""
    if isinstance(data, bytes):  # immutable: c_char_p points at the object's own buffer
        pointer = ctypes.c_char_p(data)
        return ctypes.cast(pointer, ctypes.c_void_p).value or 0, len(data), pointer
    view = memoryview(data)
    if not view.c_contiguous or view.readonly:
        raise ValueError(f"raw publish needs bytes or a writable C-contiguous buffer, got {type(data).__name__}")
    array = (ctypes.c_char * view.nbytes).from_buffer(view)
    return ctypes.addressof(array), view.nbytes, array
