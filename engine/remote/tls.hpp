// marshal remote: mutual TLS for `marshal serve` and its clients (kj-tls).
// Reads and checks the PEM files of a TlsFiles (surrogate.hpp) and makes the
// kj TLS context of one side: a server's requires every client to present a
// certificate signed by one of its client CAs; a client's trusts only the
// server CAs it was given and presents its own certificate. TLS 1.2 or later,
// never the system's trust store.
//
// The handshake's last step is ours: once the server has checked the client's
// certificate it sends one byte before Cap'n Proto starts, and the client waits
// for it. In TLS 1.3 a client's side of the handshake completes before the
// server has looked at its certificate, so without that byte a refused client
// would learn it only from a failed first call, not from the handshake.
#pragma once

#include "remote/surrogate.hpp"

#include <kj/async-io.h>
#include <kj/compat/tls.h>

#include <chrono>
#include <string>

namespace marshal::engine::remote {

// What the server sends once a client's certificate is accepted.
inline constexpr unsigned char tls_accepted = 1;
// How long a connection may take from TCP connect to that byte, either side.
inline constexpr int tls_handshake_seconds = 30;
// A client's TCP keepalive on its connection to a server (keep_alive): a
// server host that stops answering ends the connection within about this.
inline constexpr std::chrono::milliseconds client_keepalive{10000};

// The TLS context of a server (server = true) or a client; nullptr with an
// error naming the file that is missing, unreadable or not what it should be
// (a PEM certificate, an unencrypted PEM private key that belongs to the
// certificate, PEM CA certificates).
kj::Own<kj::TlsContext> tls_context(const TlsFiles& files, bool server, std::string& error);

// A failed handshake's exception in words: OpenSSL's reason ("certificate
// verify failed", "tlsv13 alert certificate required") without kj's framing.
std::string tls_reason(const kj::Exception& e);

// The client's side of the handshake over a connected stream: TLS with the
// server's certificate checked against `name`, then the server's byte. The
// stream to speak Cap'n Proto on, or an exception whose description says why.
kj::Promise<kj::Own<kj::AsyncIoStream>> tls_connect(kj::TlsContext& tls, kj::Own<kj::AsyncIoStream> stream,
                                                     const std::string& name);

// The server's side over an accepted stream: TLS with the client's certificate
// checked, then the byte.
kj::Promise<kj::Own<kj::AsyncIoStream>> tls_accept(kj::TlsContext& tls, kj::Own<kj::AsyncIoStream> stream);

// TCP keepalive on a connection (TLS or not, before the handshake): the kernel
// probes an idle peer and ends the connection when its host stops answering
// for about `timeout` (a dead machine, a cut link), whatever the event loop
// is doing. Nothing for zero or a stream that is not a TCP socket.
void keep_alive(kj::AsyncIoStream& stream, std::chrono::milliseconds timeout);

}  // namespace marshal::engine::remote
