/* marshal: the stable C API (C99).
 *
 * Calls exports of native libraries described by a JSON typemap, from any host
 * that can call C. Opaque handles; no C++ exception ever crosses this API.
 *
 * Conventions (the same for every function; README.md, "The C API"):
 * - Errors: every function that can fail returns a marshal_status (MARSHAL_OK
 *   is 0) and leaves a structured error on the calling thread:
 *   marshal_last_error() gives it, marshal_error_id / _message / _function /
 *   _parameter_index ... read it. Functions that answer with a count or a
 *   pointer (getters) return 0 / NULL on failure and leave the error the same
 *   way.
 * - Constructors: every function that makes an object is named
 *   marshal_<type>_create or marshal_<type>_create_<variant>, returns a
 *   marshal_status and writes the new handle to its last parameter `out`.
 *   The caller owns one reference. On failure *out is NULL (or untouched
 *   when an argument before it was refused): test the status.
 * - Operations that make a new object are named by their verb and follow the
 *   same shape: marshal_function_call, marshal_object_call,
 *   marshal_object_query, marshal_interface_unmarshal (status, `out` last, a
 *   new reference).
 * - Loading and lookup (marshal_typemap_load*, marshal_library_function,
 *   marshal_library_signature, marshal_library_type) follow that shape too,
 *   but what they give belongs to its parent: the caller never releases it.
 * - Lifetime, in the HarfBuzz style, with a reference count:
 *   marshal_<type>_retain adds a reference (returns its argument, or NULL with
 *   the error), marshal_<type>_release drops one; the object is destroyed with
 *   its last. Release functions accept NULL. marshal_callback_deactivate is
 *   not a release: it makes a registered callback's native function pointer
 *   stop calling the host (the value handle stays until released).
 *
 * Ownership:
 * - a marshal_typemap belongs to its context and lives as long as it;
 * - a marshal_function, marshal_signature or marshal_type belongs to its
 *   library and lives as long as it: it does not keep the library alive; used
 *   after its library was released it fails with
 *   MARSHAL_ERROR_INVALID_HANDLE;
 * - a marshal_library keeps its context alive;
 * - values read from a result, a list or a record, and the arguments a host
 *   function receives, are borrowed: valid while their owner is (and until a
 *   list or record changes, or a reused result is called into again), unless
 *   retained. A borrowed value may not be released or changed by the host;
 * - a result holds only host values: it stays readable after its library and
 *   context are released.
 *
 * Handles are checked: a handle is not a pointer but a slot of a table and a
 * generation, checked by every function. A released (or stale, or made-up)
 * handle, or a handle of another type, is never undefined behaviour: the
 * function fails with MARSHAL_ERROR_INVALID_HANDLE and a message naming the
 * function and the misuse ("marshal_result_release: result handle already
 * released"); functions that return a count or a pointer return 0 / NULL
 * (marshal_value_kind: MARSHAL_INVALID) and leave that message. A released
 * handle never becomes valid again.
 *
 * Threading:
 * - contexts, typemaps, libraries and functions may be used from any number
 *   of threads at once (load, create, bind, call);
 * - a value or a result is used by one thread at a time while anything
 *   changes it (set_*, list_append, record_set, a call into a result, and
 *   list_get / record_get, which make its borrowed handles); reading it
 *   (get_*, kind, to_json, passing it as an argument) may be concurrent;
 * - retain and release are atomic: references may be handed between threads
 *   and dropped anywhere; but a thread must not drop the last reference of
 *   something another thread is using (a library whose function another thread
 *   is calling, a value another thread passes) -- that race is the host's,
 *   as with any reference count;
 * - on the calling thread, a host function (callback) may release the
 *   library, result, object or arguments of the call it runs in: the release
 *   takes effect when that call returns (the handle is dead at once). It may
 *   not change an argument of that call (MARSHAL_ERROR_MISUSE);
 * - the error marshal_last_error() gives is the calling thread's own. */
#ifndef MARSHAL_H
#define MARSHAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MARSHAL_API __attribute__((visibility("default")))
#else
#define MARSHAL_API
#endif

typedef enum marshal_status {
  MARSHAL_OK = 0,
  MARSHAL_ERROR_ARGUMENT = 1, /* a NULL or ill-typed argument to this API */
  MARSHAL_ERROR_TYPEMAP = 2,  /* the typemap failed to load (every error is in the message) */
  MARSHAL_ERROR_LIBRARY = 3,  /* the native library could not be loaded */
  MARSHAL_ERROR_BIND = 4,     /* unknown function, missing symbol, inexpressible signature */
  MARSHAL_ERROR_CALL = 5,     /* a wrong argument (before any native code ran) or a failed check */
  MARSHAL_ERROR_INTERNAL = 6, /* out of memory or an engine fault */
  MARSHAL_ERROR_INVALID_HANDLE = 7, /* a released, stale or made-up handle, or a handle of another type */
  MARSHAL_ERROR_MISUSE = 8    /* a live handle used against its rules (releasing a borrowed value...) */
} marshal_status;

typedef enum marshal_kind {
  MARSHAL_INVALID = -1, /* marshal_value_kind of an invalid handle (see marshal_last_error) */
  MARSHAL_NULL = 0,
  MARSHAL_BOOL,
  MARSHAL_INT64,
  MARSHAL_UINT64,
  MARSHAL_DOUBLE,
  MARSHAL_STRING,
  MARSHAL_BYTES,
  MARSHAL_LIST,
  MARSHAL_RECORD,
  MARSHAL_ADDRESS,
  MARSHAL_HANDLE,
  MARSHAL_NATIVE,
  MARSHAL_FUNCTION,
  MARSHAL_CALLBACK,
  MARSHAL_OBJECT,     /* a native object (one per COM identity) */
  MARSHAL_HOST_OBJECT /* a host object made with marshal_value_create_host_object */
} marshal_kind;

typedef struct marshal_context marshal_context;
typedef struct marshal_typemap marshal_typemap;
typedef struct marshal_library marshal_library;
typedef struct marshal_function marshal_function;
typedef struct marshal_signature marshal_signature;
typedef struct marshal_type marshal_type;
typedef struct marshal_value marshal_value;
typedef struct marshal_result marshal_result;
typedef struct marshal_error marshal_error;

/* ---- version ----
 * The library's version (meson's project version), for a host to check what it
 * runs against: "0.1.0", and its three numbers. */
MARSHAL_API const char *marshal_version(void);
MARSHAL_API unsigned marshal_version_major(void);
MARSHAL_API unsigned marshal_version_minor(void);
MARSHAL_API unsigned marshal_version_micro(void);

/* ---- errors ----
 * One table of error ids, stable across versions (new ids are only added).
 * The status a function returns says which class of failure it was; the id
 * says what went wrong. */
typedef enum marshal_error_code {
  MARSHAL_E_NONE = 0,             /* no error on this thread yet */
  MARSHAL_E_INVALID_ARGUMENT = 1, /* a bad argument to this API: NULL, a wrong count, a value of the wrong
                                     kind, an index out of range, a negative count passed as size_t */
  MARSHAL_E_TYPEMAP = 2,          /* the typemap failed to load (file and pointer: the first problem) */
  MARSHAL_E_LIBRARY_NOT_FOUND = 3, /* the native library could not be loaded */
  MARSHAL_E_NOT_FOUND = 4,        /* a name the typemap or the value does not have: function, type, class,
                                     out parameter, record field */
  MARSHAL_E_BIND = 5,             /* a function of the typemap could not be bound (its symbol is missing,
                                     or libffi cannot express it; the message says which) */
  MARSHAL_E_CONVERSION = 6,       /* a value does not convert (out of range, wrong kind) */
  MARSHAL_E_NULL_NOT_ALLOWED = 7, /* null where the typemap does not allow it */
  MARSHAL_E_NATIVE = 8,           /* native code reported a failure (errno, HRESULT, a return value) */
  MARSHAL_E_WRONG_APARTMENT = 9,  /* an object reference used outside its apartment */
  MARSHAL_E_RELEASED = 10,        /* a released (or stale) handle, a deactivated callback */
  MARSHAL_E_LIMIT = 11,           /* a limit: the allocation limit, the handle table, a reference count */
  MARSHAL_E_INTERNAL = 12,        /* out of memory or an engine fault */
  MARSHAL_E_MISUSE = 13,          /* a live handle used against its rules (releasing a borrowed value...) */
  MARSHAL_E_CALL = 14,            /* a call failed and the engine does not classify the failure yet
                                     (an ended apartment, some object paths): the message says why */
  MARSHAL_E_NATIVE_CRASH = 15,    /* native code crashed in a surrogate process (SIGSEGV, SIGFPE, abort...):
                                     function, signal (native_code) and faulting address (message) */
  MARSHAL_E_DEADLINE = 16,        /* a call of an isolated library outlasted its deadline; its surrogate
                                     was killed (native_code: SIGKILL) */
  MARSHAL_E_DISCONNECTED = 17,    /* the surrogate or server of a call went away without a crash (it
                                     exited, or the connection ended), or could not be reached */
  MARSHAL_E_REFUSED = 18          /* a server refused this client: the TLS handshake failed (no valid
                                     certificate, another CA, a wrong name), the typemap is not one it
                                     serves, or a non-loopback address without TLS */
} marshal_error_code;

/* The last error on the calling thread (never NULL; id MARSHAL_E_NONE and an
 * empty message when there was none). Valid until the next failing call on
 * this thread; copy what you keep. */
MARSHAL_API const marshal_error *marshal_last_error(void);
/* Its fields. Strings are never NULL: "" when unknown; numbers -1 when
 * unknown. What is filled today:
 * - id, message: always;
 * - function: the typemap function ("compress2") or method ("ICounter.Add")
 *   of a failed bind or call;
 * - parameter_index, parameter_name: the parameter (its index among all the
 *   signature's parameters, as in messages): an argument that is NULL or not
 *   a value handle, or one the engine failed to convert (its error record:
 *   id, got and expected filled from it too); -1 / "" otherwise;
 * - pointer: the JSON Pointer in the typemap: of a load error, of the
 *   function (or its parameter) of a failed call or bind;
 * - file: the typemap file of the above;
 * - got, expected: for wrong argument counts, wrong kinds of values in this
 *   API, and limits;
 * - native_code: the errno a failed call captured (functions with
 *   "errno": true), the HRESULT or return value a failed check saw, the
 *   signal number of a crash in a surrogate (MARSHAL_E_NATIVE_CRASH) or of
 *   its kill at a deadline (MARSHAL_E_DEADLINE), else -1. */
MARSHAL_API marshal_error_code marshal_error_id(const marshal_error *e);
MARSHAL_API const char *marshal_error_message(const marshal_error *e);
MARSHAL_API const char *marshal_error_function(const marshal_error *e);
MARSHAL_API int64_t marshal_error_parameter_index(const marshal_error *e);
MARSHAL_API const char *marshal_error_parameter_name(const marshal_error *e);
MARSHAL_API const char *marshal_error_pointer(const marshal_error *e);
MARSHAL_API const char *marshal_error_file(const marshal_error *e);
MARSHAL_API const char *marshal_error_got(const marshal_error *e);
MARSHAL_API const char *marshal_error_expected(const marshal_error *e);
MARSHAL_API int64_t marshal_error_native_code(const marshal_error *e);
/* The name of an id ("MARSHAL_E_CONVERSION"), or "" for an unknown one. */
MARSHAL_API const char *marshal_error_code_name(marshal_error_code id);

/* ---- contexts and typemaps ---- */
MARSHAL_API marshal_status marshal_context_create(marshal_context **out);
MARSHAL_API marshal_context *marshal_context_retain(marshal_context *ctx);
MARSHAL_API marshal_status marshal_context_release(marshal_context *ctx);
/* Loads a typemap into ctx (it belongs to ctx: no release). */
MARSHAL_API marshal_status marshal_typemap_load(marshal_context *ctx, const char *path, marshal_typemap **out);
MARSHAL_API marshal_status marshal_typemap_load_text(marshal_context *ctx, const char *json, size_t length,
                                                     const char *name, marshal_typemap **out);

/* ---- libraries and functions ---- */
/* Loads the native library a typemap describes. A typemap whose library says
 * "isolate": "process" is loaded as marshal_library_create_isolated does. */
MARSHAL_API marshal_status marshal_library_create(marshal_typemap *tm, marshal_library **out);
/* The same library run in a surrogate process (the marshal-surrogate program:
 * $MARSHAL_SURROGATE, else next to this program, else the installed one).
 * Functions are bound and called as in-process, with the same results; a
 * native crash there (SIGSEGV, SIGFPE, abort...) fails that call with
 * MARSHAL_ERROR_CALL, id MARSHAL_E_NATIVE_CRASH, the function, the signal
 * number as native_code and a message naming the function, the signal and the
 * faulting address ("function div crashed in the surrogate (pid N) with SIGFPE
 * (integer divide by zero at 0x7f...)"), this process keeps running, and the
 * next call starts a new surrogate (handles from the dead one fail with a
 * message). deadline_ms (0: the typemap's "deadline_ms", else none): a call
 * that takes longer fails (MARSHAL_E_DEADLINE) and its surrogate is killed.
 * Function values (marshal_value_create_function) cross: native code in the
 * surrogate calls them back in this process, on the thread waiting for the
 * call when it calls from the thread running that call (a qsort comparator),
 * else on a thread of the library (delivery "inline") or the waiting owner
 * (delivery "owner"). Registered callbacks (marshal_value_create_callback)
 * are made in the surrogate, where native code keeps their pointer; the value
 * here stands for it (pass it to this library's calls; deactivating it
 * releases the surrogate's). Host objects cross too (their methods are called
 * back here), and objects made there arrive as proxies. What cannot cross the
 * process boundary yet fails with MARSHAL_ERROR_ARGUMENT and a message saying
 * so: native memory (marshal_value_create_native), raw addresses.
 * A surrogate that cannot start, or cannot open the library, is
 * MARSHAL_ERROR_LIBRARY. */
MARSHAL_API marshal_status marshal_library_create_isolated(marshal_typemap *tm, uint32_t deadline_ms,
                                                           marshal_library **out);
/* Mutual TLS for marshal_library_connect: PEM files (cert, key and ca: all
 * three or none); name: the name the server's certificate must carry (NULL:
 * the host of the address; kj-tls compares DNS names, so give one when
 * connecting to an IP address). */
typedef struct marshal_tls_files {
  const char *cert; /* this client's certificate */
  const char *key;  /* its private key, unencrypted */
  const char *ca;   /* the CA certificates the server's certificate must chain to */
  const char *name;
} marshal_tls_files;
/* The library served by `marshal serve` at address ("HOST:PORT"), which must
 * serve the same typemap text: calls as through marshal_library_create_isolated,
 * in the server's process. Without tls (NULL) only a loopback address may be
 * used. A server that cannot be reached is MARSHAL_ERROR_LIBRARY with id
 * MARSHAL_E_DISCONNECTED; a TLS handshake that fails, a typemap the server does
 * not serve, or a non-loopback address without TLS, id MARSHAL_E_REFUSED. */
MARSHAL_API marshal_status marshal_library_connect(marshal_typemap *tm, const char *address,
                                                   const marshal_tls_files *tls, uint32_t deadline_ms,
                                                   marshal_library **out);
/* 1 when lib's calls run in a surrogate process, else 0. */
MARSHAL_API int marshal_library_isolated(const marshal_library *lib);
MARSHAL_API marshal_library *marshal_library_retain(marshal_library *lib);
MARSHAL_API marshal_status marshal_library_release(marshal_library *lib);
/* The most bytes one block of native memory (marshal_value_create_native) or
 * one buffer of a call may take; a larger request is MARSHAL_ERROR_ARGUMENT
 * (MARSHAL_E_LIMIT) before anything is allocated. The default is the
 * typemap's library "max_buffer", else 256 MiB (the engine's limit: one limit
 * for both). */
#define MARSHAL_DEFAULT_MAX_ALLOC ((size_t)256 << 20)
MARSHAL_API marshal_status marshal_library_set_max_alloc(marshal_library *lib, size_t bytes);
/* The function `name` bound to its symbol (it belongs to lib: no release). */
MARSHAL_API marshal_status marshal_library_function(marshal_library *lib, const char *name, marshal_function **out);
/* How many in/inout arguments a call takes (variadic ones come after). */
MARSHAL_API size_t marshal_function_arity(const marshal_function *fn);

/* Calls fn with args (borrowed) and returns a new result. nargs is at most
 * 65535; a function without variadic parameters given another number than
 * its arity fails without reading args. Parameters the engine computes
 * (MARSHAL_PARAM_COMPUTED) are left out of args; or every in/inout parameter
 * is given, the computed ones too, and each of those must equal what the
 * engine computes (else MARSHAL_ERROR_CALL, MARSHAL_E_INVALID_ARGUMENT, naming
 * the parameter, with got and expected). */
MARSHAL_API marshal_status marshal_function_call(const marshal_function *fn, marshal_value *const *args, size_t nargs,
                                                 marshal_result **out);
MARSHAL_API const marshal_value *marshal_result_return(const marshal_result *r);
MARSHAL_API size_t marshal_result_out_count(const marshal_result *r);
MARSHAL_API const char *marshal_result_out_name(const marshal_result *r, size_t i);
/* The out/inout parameter by name, or NULL. */
MARSHAL_API const marshal_value *marshal_result_out(const marshal_result *r, const char *name);
/* 1 and *err set when the function captures errno, else 0. */
MARSHAL_API int marshal_result_errno(const marshal_result *r, int *err);
MARSHAL_API marshal_status marshal_result_release(marshal_result *r);
/* Calls without an allocation per call: a result made once and reused. Each
 * call replaces r's return and out values; a value retained from an earlier
 * call (marshal_value_retain) keeps its contents, and r is left unchanged when
 * the call fails. An out array of numbers is written into the storage of the
 * list the call before replaced (r keeps it for that: the memory of two such
 * lists). Release r with marshal_result_release. */
MARSHAL_API marshal_status marshal_result_create(marshal_result **out);
MARSHAL_API marshal_status marshal_function_call_into(const marshal_function *fn, marshal_value *const *args,
                                                      size_t nargs, marshal_result *r);

/* ---- introspection ----
 * What a library's typemap declares, without binding anything (a function
 * whose symbol is missing is listed too). Indexes out of range give NULL or
 * MARSHAL_ERROR_ARGUMENT (MARSHAL_E_INVALID_ARGUMENT) with a message. */
MARSHAL_API size_t marshal_library_function_count(const marshal_library *lib);
/* The i-th function's name, in name order (borrowed, valid while lib is). */
MARSHAL_API const char *marshal_library_function_name(const marshal_library *lib, size_t i);
/* A function's signature (it belongs to lib: no release). */
MARSHAL_API marshal_status marshal_library_signature(marshal_library *lib, const char *function,
                                                     marshal_signature **out);

typedef enum marshal_direction {
  MARSHAL_DIR_IN = 0,
  MARSHAL_DIR_OUT = 1,
  MARSHAL_DIR_INOUT = 2
} marshal_direction;
/* Flags of a parameter. */
#define MARSHAL_PARAM_OPTIONAL 1u /* "nullable": null is allowed */
#define MARSHAL_PARAM_COMPUTED 2u /* its value is computed by the engine: the host does not pass it */

MARSHAL_API const char *marshal_signature_name(const marshal_signature *sig);
/* The return type as text ("int32", "void", "ptr<Point>"; borrowed). */
MARSHAL_API const char *marshal_signature_return_type(const marshal_signature *sig);
/* All parameters, the computed ones and out ones too. */
MARSHAL_API size_t marshal_signature_param_count(const marshal_signature *sig);
/* The index of the first variadic argument, or -1 when the function is not variadic. */
MARSHAL_API int64_t marshal_signature_variadic_from(const marshal_signature *sig);
/* Parameter i: any of the out pointers may be NULL (not wanted). Strings are
 * borrowed (valid while the library is). */
MARSHAL_API marshal_status marshal_signature_param(const marshal_signature *sig, size_t i, const char **name,
                                                   const char **type, marshal_direction *dir, uint32_t *flags);

typedef enum marshal_type_kind {
  MARSHAL_TYPE_VOID = 0,
  MARSHAL_TYPE_INTEGER,
  MARSHAL_TYPE_FLOAT,
  MARSHAL_TYPE_BOOL,
  MARSHAL_TYPE_POINTER,   /* an opaque address */
  MARSHAL_TYPE_PTR,       /* a pointer to one value of a type */
  MARSHAL_TYPE_ARRAY,
  MARSHAL_TYPE_STRING,
  MARSHAL_TYPE_STRUCT,
  MARSHAL_TYPE_UNION,
  MARSHAL_TYPE_ENUM,
  MARSHAL_TYPE_HANDLE,
  MARSHAL_TYPE_CALLBACK,
  MARSHAL_TYPE_INTERFACE
} marshal_type_kind;

/* The named types of lib's typemap, in name order (borrowed names). */
MARSHAL_API size_t marshal_library_type_count(const marshal_library *lib);
MARSHAL_API const char *marshal_library_type_name(const marshal_library *lib, size_t i);
/* A type by name: a named type of the typemap or a primitive ("int32",
 * "size_t"). It belongs to lib: no release. */
MARSHAL_API marshal_status marshal_library_type(marshal_library *lib, const char *name, marshal_type **out);
/* Its kind, size and alignment in bytes (each out pointer may be NULL). */
MARSHAL_API marshal_status marshal_type_layout(const marshal_type *type, marshal_type_kind *kind, size_t *size,
                                               size_t *align);
/* The type as text (borrowed). */
MARSHAL_API const char *marshal_type_text(const marshal_type *type);
/* The fields of a struct or union (0 for other kinds). */
MARSHAL_API size_t marshal_type_field_count(const marshal_type *type);
/* Field i: name, byte offset, type text (each out pointer may be NULL). */
MARSHAL_API marshal_status marshal_type_field(const marshal_type *type, size_t i, const char **name, size_t *offset,
                                              const char **field_type);

/* ---- values ---- */
MARSHAL_API marshal_status marshal_value_create_null(marshal_value **out);
MARSHAL_API marshal_status marshal_value_create_bool(int b, marshal_value **out);
MARSHAL_API marshal_status marshal_value_create_int64(int64_t v, marshal_value **out);
MARSHAL_API marshal_status marshal_value_create_uint64(uint64_t v, marshal_value **out);
MARSHAL_API marshal_status marshal_value_create_double(double v, marshal_value **out);
/* Exactly length bytes are copied (no NUL needed). NULL with a length other
 * than 0, or a length above PTRDIFF_MAX, is MARSHAL_ERROR_ARGUMENT. */
MARSHAL_API marshal_status marshal_value_create_string(const char *utf8, size_t length, marshal_value **out);
MARSHAL_API marshal_status marshal_value_create_bytes(const void *data, size_t length, marshal_value **out);
MARSHAL_API marshal_status marshal_value_create_list(marshal_value **out);
MARSHAL_API marshal_status marshal_value_create_record(marshal_value **out);
/* Native memory the host owns (like a ctypes array or cffi's ffi.new): count
 * zeroed values of `type` (a primitive or a type of lib's typemap). Given for
 * an array or ptr parameter of that element type it needs no conversion: an
 * `in` array is copied once (the callee never changes the host's memory), an
 * `inout` array and a ptr are passed by address. count times the type's size
 * is checked: an overflow, or more than the library's limit
 * (marshal_library_set_max_alloc), is MARSHAL_ERROR_ARGUMENT. */
MARSHAL_API marshal_status marshal_value_create_native(marshal_library *lib, const char *type, size_t count,
                                                       marshal_value **out);
/* The address and size in bytes of native memory (to fill or read it),
 * valid while v is. */
MARSHAL_API marshal_status marshal_native_data(const marshal_value *v, void **data, size_t *size);
MARSHAL_API marshal_value *marshal_value_retain(marshal_value *v);
/* Changes a scalar value in place (to reuse an argument across calls), to a
 * value of the same kind (set_int64 and set_uint64: an integer). A value of
 * another kind, a retained (shared) value or a borrowed one is
 * MARSHAL_ERROR_ARGUMENT ("marshal_value_set_int64: value is a string, not an
 * integer ..."). */
MARSHAL_API marshal_status marshal_value_set_bool(marshal_value *v, int b);
MARSHAL_API marshal_status marshal_value_set_int64(marshal_value *v, int64_t x);
MARSHAL_API marshal_status marshal_value_set_uint64(marshal_value *v, uint64_t x);
MARSHAL_API marshal_status marshal_value_set_double(marshal_value *v, double x);
/* Releasing a borrowed value (not retained) is MARSHAL_ERROR_MISUSE. */
MARSHAL_API marshal_status marshal_value_release(marshal_value *v);

/* Containers copy the item in; the caller keeps its reference. A borrowed
 * container is read-only (MARSHAL_ERROR_ARGUMENT). */
MARSHAL_API marshal_status marshal_list_append(marshal_value *list, const marshal_value *item);
MARSHAL_API marshal_status marshal_record_set(marshal_value *record, const char *name, const marshal_value *item);

MARSHAL_API marshal_kind marshal_value_kind(const marshal_value *v);
MARSHAL_API marshal_status marshal_value_get_bool(const marshal_value *v, int *out);
/* Integers convert between int64 and uint64 when the value fits. */
MARSHAL_API marshal_status marshal_value_get_int64(const marshal_value *v, int64_t *out);
MARSHAL_API marshal_status marshal_value_get_uint64(const marshal_value *v, uint64_t *out);
MARSHAL_API marshal_status marshal_value_get_double(const marshal_value *v, double *out);
/* Borrowed data, valid while v is. */
MARSHAL_API marshal_status marshal_value_get_string(const marshal_value *v, const char **data, size_t *length);
MARSHAL_API marshal_status marshal_value_get_bytes(const marshal_value *v, const uint8_t **data, size_t *length);
/* Counts of a value that is not a list / record are 0; an index out of range
 * or a missing name gives NULL; each with a message. */
MARSHAL_API size_t marshal_list_size(const marshal_value *list);
MARSHAL_API const marshal_value *marshal_list_get(const marshal_value *list, size_t i);
MARSHAL_API size_t marshal_record_size(const marshal_value *record);
MARSHAL_API const char *marshal_record_name(const marshal_value *record, size_t i);
MARSHAL_API const marshal_value *marshal_record_get(const marshal_value *record, const char *name);

/* ---- callbacks ----
 * A host function for callback parameters. It receives the arguments
 * (borrowed), sets *result to a new value (leave it NULL for void) and returns
 * 0; or returns non-zero to fail, optionally setting *error to a message (it
 * is copied). Native code then receives the signature's on_error value and the
 * outer call fails with MARSHAL_ERROR_CALL naming the callback. */
typedef int (*marshal_host_fn)(void *user, const marshal_value *const *args, size_t nargs, marshal_value **result,
                               const char **error);
/* A function value; pass it where a callback of scope "call" is expected.
 * destroy(user), when not NULL, is always called exactly once: when the last
 * reference to the function is gone (the library may keep one to reuse its
 * closure), or right away if creation fails. */
MARSHAL_API marshal_status marshal_value_create_function(const char *name, marshal_host_fn fn, void *user,
                                                         void (*destroy)(void *user), marshal_value **out);
/* A registered callback of signature sig calling the function value fn: pass it
 * where a callback of scope "registered" is expected. It is active (native code
 * may call its function pointer) until marshal_callback_deactivate; a later
 * call from native code reaches the trap, which names the callback. On an
 * isolated library it is made in the surrogate (marshal_library_create_isolated). */
MARSHAL_API marshal_status marshal_value_create_callback(marshal_library *lib, const char *sig,
                                                         const marshal_value *fn, marshal_value **out);
/* Deactivates a registered callback: native code must no longer call it. This
 * is not a release: the value handle stays valid (and is released with
 * marshal_value_release); deactivating it twice is MARSHAL_ERROR_MISUSE
 * (MARSHAL_E_RELEASED). Releasing the last reference of an active callback
 * does not deactivate it: native code may still hold its pointer. NULL is
 * accepted (nothing to do). */
MARSHAL_API marshal_status marshal_callback_deactivate(marshal_value *callback);
/* Callbacks whose signature says "delivery": "owner" run on the thread that
 * created them: a native thread calling one waits until the owner runs it.
 * The owner runs them here: the calls pending for the calling thread on lib's
 * callbacks, waiting up to wait_ms for the first when none is pending; *ran
 * (may be NULL) is how many ran. A thread that entered a single-threaded
 * apartment runs them from marshal_apartment_pump instead. */
MARSHAL_API marshal_status marshal_library_pump(marshal_library *lib, uint32_t wait_ms, size_t *ran);

/* ---- objects (COM-style interfaces) ----
 * A native object value holds one reference per interface it was obtained as
 * and releases each once, with its last marshal_value reference. The same
 * native object always gives the same object value while one is alive,
 * whichever interface it came through (marshal_object_same). */
/* An instance of a class of the typemap, through its factory function. */
MARSHAL_API marshal_status marshal_value_create_object(marshal_library *lib, const char *cls,
                                                       marshal_value *const *args, size_t nargs, marshal_value **out);
/* Calls a method ("Add", or "ICounter.Add" to name the interface); out
 * parameters and the return are in the result, as for functions. A method
 * declared "hresult" fails with MARSHAL_ERROR_CALL when it returns a negative code. */
MARSHAL_API marshal_status marshal_object_call(const marshal_value *obj, const char *method, marshal_value *const *args,
                                               size_t nargs, marshal_result **out);
/* The same into a reused result (see marshal_function_call_into). */
MARSHAL_API marshal_status marshal_object_call_into(const marshal_value *obj, const char *method,
                                                    marshal_value *const *args, size_t nargs, marshal_result *r);
/* The same object as another interface (QueryInterface by the typemap's iid). */
MARSHAL_API marshal_status marshal_object_query(const marshal_value *obj, const char *iface, marshal_value **out);
/* 1 when a and b are the same object (native: COM identity; host: the same host object). */
MARSHAL_API int marshal_object_same(const marshal_value *a, const marshal_value *b);
/* The interface a native object value was obtained as (borrowed), or NULL. */
MARSHAL_API const char *marshal_object_interface(const marshal_value *obj);

/* A host object: native code calls its methods through a vtable the engine
 * builds. Methods are named "Add" or "ICounter.Add" and called like host
 * functions (arguments without `this`). interfaces lists what it implements
 * (their bases too); none means: the interfaces it is passed as. Native
 * references (AddRef/Release) keep it alive; when native code hands it back,
 * the host gets this same value. destroy(user) runs exactly once, when the
 * object is gone (or right away if creation fails). A failing method returns
 * E_FAIL to native code for "hresult" methods, else the method's on_error. */
typedef struct marshal_host_method {
  const char *name;
  marshal_host_fn fn;
} marshal_host_method;
MARSHAL_API marshal_status marshal_value_create_host_object(const char *name, const char *const *interfaces,
                                                            size_t ninterfaces, const marshal_host_method *methods,
                                                            size_t nmethods, void *user, void (*destroy)(void *user),
                                                            marshal_value **out);
/* References native code holds on a host object now. */
MARSHAL_API uint32_t marshal_host_object_refs(const marshal_value *obj);

/* ---- apartments (TYPEMAP.md, Apartments) ----
 * A thread enters a new single-threaded apartment (sta = 1; it then runs its
 * message loop with marshal_apartment_pump for calls from other apartments)
 * or the process's multithreaded apartment (sta = 0), and leaves it. A
 * reference belongs to the apartment it was obtained in; another apartment
 * uses it through a proxy made from a token (each token is unmarshaled once).
 * Using a reference from the wrong apartment fails with "wrong apartment". */
MARSHAL_API marshal_status marshal_apartment_enter(int sta);
MARSHAL_API void marshal_apartment_leave(void);
/* Runs the calls queued for this thread's STA, waiting up to wait_ms for the
 * first; *ran (may be NULL) is how many ran. A thread outside an STA gets
 * MARSHAL_ERROR_MISUSE (MARSHAL_E_WRONG_APARTMENT). Entering an apartment
 * from a thread that is in one fails with MARSHAL_E_WRONG_APARTMENT too. */
MARSHAL_API marshal_status marshal_apartment_pump(uint32_t wait_ms, size_t *ran);
MARSHAL_API marshal_status marshal_interface_marshal(const marshal_value *obj, uint64_t *token);
MARSHAL_API marshal_status marshal_interface_unmarshal(uint64_t token, marshal_value **out);
/* 1 when obj is a proxy (its calls run in another apartment). */
MARSHAL_API int marshal_object_is_proxy(const marshal_value *obj);

/* JSON forms (TYPEMAP.md "Host values in JSON"). to_json gives a string to
 * free with marshal_free. */
MARSHAL_API marshal_status marshal_value_create_from_json(const char *json, marshal_value **out);
MARSHAL_API marshal_status marshal_value_to_json(const marshal_value *v, char **out);
MARSHAL_API void marshal_free(void *p);

#ifdef __cplusplus
}
#endif

#endif
