@0xd7fe9d8e2cecb849;
# marshal remote: the wire schema between a host and a surrogate (or server).
# It carries the engine's dynamic host values (engine/value.hpp); typemap
# checking stays in the plans on the side that makes the native call, which
# holds the same typemap. Handles cross as capabilities that live in the vat
# that owns the native handle (one capability per identity), so Cap'n Proto
# counts the references and drops them all when the connection ends.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("marshal::engine::remote::wire");

struct Value {
  union {
    null @0 :Void;
    bool @1 :Bool;
    int @2 :Int64;
    uint @3 :UInt64;
    real @4 :Float64;
    text @5 :Text;
    bytes @6 :Data;
    list @7 :List(Value);
    record @8 :List(Field);
    handle @9 :HandleRef;
    object @10 :RemoteRef;
    function @11 :FunctionRef;
    hostObject @12 :HostObjectRef;
    callback @13 :CallbackRef;
  }
}

struct Field {
  name @0 :Text;
  value @1 :Value;
}

# A native handle: the capability lives in the surrogate; typeName and value
# are the native handle's type and bits (for messages and display only: the
# host never passes the bits back, it passes the capability).
struct HandleRef {
  cap @0 :Handle;
  typeName @1 :Text;
  value @2 :Int64;
}

interface Handle {
  # The handle's release function, called now (as the engine's explicit release).
  release @0 () -> ();
}

# A registered callback (scope "registered") made on the serving side for a
# host function of the host's (Library.callback): its closure lives there,
# where native code keeps its pointer. The host holds the capability while
# its callback is active; dropping it releases the callback there (a late
# call from native code then reaches the trap, as in-process). Passed back
# in a call, it is the serving side's own callback again.
struct CallbackRef {
  cap @0 :RegisteredCallback;
  signature @1 :Text;   # the callback signature's typemap name
}

interface RegisteredCallback {
}

# A COM-style object living on the serving side: one capability per object
# identity there (whatever interface it crossed as), so the importer gets one
# import per object. identity is the serving side's COM identity (the IUnknown
# address), for equality only: it is never passed back, the capability is.
# interface: the interface this reference is, by its typemap name.
# A host function (a callback's code) living on the side that sent it: the
# receiver makes native function pointers for it there, and each call from
# native code comes back as HostCallback.call. One capability per host
# function while the receiver holds it, so the receiver reuses its closure.
struct FunctionRef {
  cap @0 :HostCallback;
  name @1 :Text;   # the host function's name, for messages only
}

# A host-implemented object (a COM-style object whose methods are host
# functions) living on the side that sent it: the receiver makes a native
# object for it there (one per capability, so identity holds), whose methods
# call the host functions back; sent back, it is the original object again.
# Its methods are sent each time; a receiver that already has the object
# ignores them.
struct HostObjectRef {
  cap @0 :HostObjectCap;
  name @1 :Text;
  interfaces @2 :List(Text);
  methods @3 :List(Field);   # each a function value
}

interface HostObjectCap {
  # Nothing to call: the capability is the object's identity and keeps it
  # alive on its side while the other side holds it.
}

interface HostCallback {
  # token: the caller's call (Library.call, RemoteObject.call) this callback
  # runs inside, when native code calls back on the thread that runs that call
  # (the caller runs it on its waiting thread); 0 when called from another
  # thread (a thread of the library's own). chain: from such a thread, the
  # id of its wait, which the calls the host function makes meanwhile carry
  # (Library.call), so that they run on that waiting thread (0: none). The
  # outcome's ok.ret is the host function's result.
  call @0 (args :List(Value), token :UInt64, chain :UInt64) -> (outcome :Outcome);
}

struct RemoteRef {
  cap @0 :RemoteObject;
  identity @1 :UInt64;
  interface @2 :Text;
}

interface RemoteObject {
  # A method by name ("Add" or "ICounter.Add"), resolved through `interface`
  # as in-process; the outcome is a function call's.
  call @0 (interface :Text, method :Text, args :List(Value), token :UInt64, chain :UInt64) -> (outcome :Outcome);
  # The same object as another interface: ok.ret is its RemoteRef (as an object value).
  queryInterface @1 (interface :Text) -> (outcome :Outcome);
}

struct Outcome {
  union {
    ok @0 :Done;
    error @1 :Text;   # the engine's message for a refused or failed call
  }
  # With an error: the engine's structured record of it (engine/base/error.hpp),
  # when the serving side has one, so the host's record is an in-process call's.
  record @2 :ErrorRecord;
  struct Done {
    ret @0 :Value;
    out @1 :List(Field);
    hasErrno @2 :Bool;
    errno @3 :Int32;
  }
}

struct ErrorRecord {
  id @0 :Text;            # the stable id name ("conversion"); a name the host does not know is "unclassified"
  function @1 :Text;
  file @2 :Text;
  pointer @3 :Text;
  paramIndex @4 :Int32 = -1;
  paramName @5 :Text;
  got @6 :Text;
  expected @7 :Text;
  nativeKind @8 :UInt8;   # NativeCodeKind: 0 none, 1 errno, 2 HRESULT, 3 signal, 4 return value
  nativeCode @9 :Int64;
}

interface Library {
  # A registered callback of `signature` calling `function` back: outcome.ok.ret
  # is its CallbackRef (or the error, as in-process).
  callback @1 (signature :Text, function :FunctionRef) -> (outcome :Outcome);

  # token: the caller's id for this call (non-zero), which callbacks made
  # during it carry back (HostCallback.call). chain: the wait of the serving
  # side's thread whose callback this call is made from (HostCallback.call's
  # chain; 0: none): the call runs on that thread, which waits for it (COM's
  # causality), as it would in-process.
  call @0 (function :Text, args :List(Value), token :UInt64, chain :UInt64) -> (outcome :Outcome);
}

interface Surrogate {
  # Loads the typemap (its JSON text; file names it in messages) and opens
  # its library in this process; an error is the loader's first message.
  # errorId: the failure's stable id name (ErrorRecord.id): "refused" for a
  # typemap a server does not serve.
  # heartbeatMs: a server's heartbeat timeout (0: none, a surrogate): it ends
  # a client's session, releasing what the client holds, when nothing came
  # from the client for that long; the client pings well within it.
  # direct: a surrogate given a direct channel (its second socket, fd 5)
  # serves this library's calls on it too: one plain message per call (a
  # Library.call's params, no capability table) answered by one (its
  # Outcome), for calls whose values are all data (see surrogate.cpp).
  open @0 (typemap :Text, file :Text) -> (library :Library, error :Text, errorId :Text, heartbeatMs :UInt32,
                                         direct :Bool);
  # Does nothing: a client's heartbeat.
  ping @1 () -> ();
}
