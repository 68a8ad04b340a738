"""Is a MySQL connection inside a transaction? Asked, without a round trip,
of every connection returned to a pool.

The server reports it in the status flags of every reply
(``SERVER_STATUS_IN_TRANS``) and the client library keeps the last flags;
mysqlclient exposes only the autocommit flag (``get_autocommit()``). MariaDB's
client library (libmariadb, what Debian's mysqlclient links to) has a public
call for all of them, ``mariadb_get_info(..., MARIADB_CONNECTION_SERVER_STATUS)``,
given the connection's ``MYSQL*``, which mysqlclient hands out through a
private method (see ``_compat.mysql_native_connection``).

With another client library (Oracle's libmysqlclient) the answer is
``None``, unknown: the pool then rolls back every returned connection (a round
trip), as closing it would have, and says so once in the log.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import weakref
from typing import Any

from .. import _compat

logger = logging.getLogger("selecto_pool.pool")

# mysql.h: enum mariadb_value; mariadb_com.h: the status flag.
_MARIADB_CONNECTION_SERVER_STATUS = 30
_SERVER_STATUS_IN_TRANS = 1
_CAPSULE_NAME = b"_mysql.connection.native_connection"

_lock = threading.Lock()
_resolved = False
_get_info: Any = None
_capsule_pointer: Any = None
# Each connection's MYSQL*: stable for the life of the connection object.
_pointers: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _resolve() -> Any:
    """``mariadb_get_info`` from the very library mysqlclient uses, or None."""
    global _resolved, _get_info, _capsule_pointer
    with _lock:
        if _resolved:
            return _get_info
        import MySQLdb._mysql

        client: Any = MySQLdb._mysql

        try:
            # Looked up through mysqlclient's own extension: its dependencies
            # are searched, so the function found is the one of the library
            # the connections were made by, never another one's.
            library = ctypes.CDLL(MySQLdb._mysql.__file__)
            get_info: Any = library.mariadb_get_info
        except (OSError, AttributeError):
            logger.warning(
                "mysqlclient's client library (%s) can't report whether a "
                "connection is in a transaction: every connection returned to "
                "a pool is rolled back (a round trip)",
                client.get_client_info(),
            )
            get_info = None
        else:
            get_info.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
            get_info.restype = ctypes.c_ubyte  # my_bool: 0 on success
            # A prototype of our own: setting argtypes on ctypes.pythonapi's
            # would change it for everyone.
            _capsule_pointer = ctypes.PYFUNCTYPE(
                ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p
            )(("PyCapsule_GetPointer", ctypes.pythonapi))
        _get_info = get_info
        _resolved = True
        return get_info


def _pointer(conn: Any) -> int:
    pointer = _pointers.get(conn)
    if pointer is None:
        capsule = _compat.mysql_native_connection(conn)
        pointer = _capsule_pointer(capsule, _CAPSULE_NAME)
        _pointers[conn] = pointer
    return pointer


def in_transaction(conn: Any) -> bool | None:
    """True or False from the last reply's status, None if it can't be known."""
    get_info = _get_info if _resolved else _resolve()
    if get_info is None or not conn.open:
        return None
    status = ctypes.c_uint()
    pointer = _pointer(conn)
    if get_info(pointer, _MARIADB_CONNECTION_SERVER_STATUS, ctypes.byref(status)):
        return None
    return bool(status.value & _SERVER_STATUS_IN_TRANS)
