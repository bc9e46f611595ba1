// marshal remote: mutual TLS for `marshal serve` and its clients (see tls.hpp).
// The PEM files are checked here with OpenSSL itself, so that each mistake is
// an error naming its file: kj-tls would report a bare OpenSSL code, and
// OpenSSL silently drops a key that does not belong to its certificate (the
// handshake then fails for no visible reason).
#include "remote/tls.hpp"

#include <kj/debug.h>
#include <kj/vector.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <sstream>
#include <vector>

namespace marshal::engine::remote {

void keep_alive(kj::AsyncIoStream& stream, std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) return;
  const int on = 1;
  const int probe = static_cast<int>(std::max<std::int64_t>(1, timeout.count() / 3000));
  const int count = 3;
  const unsigned user_timeout = static_cast<unsigned>(timeout.count());
  try {
    stream.setsockopt(SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    stream.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, &probe, sizeof probe);
    stream.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, &probe, sizeof probe);
    stream.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    stream.setsockopt(IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
  } catch (const kj::Exception&) {
    // not a TCP socket: the heartbeat alone
  }
}

std::string tls_missing(const TlsFiles& tls, const char* cert_name, const char* key_name, const char* ca_name) {
  if (!tls.any()) return "";
  std::vector<const char*> missing;
  if (tls.cert.empty()) missing.push_back(cert_name);
  if (tls.key.empty()) missing.push_back(key_name);
  if (tls.ca.empty()) missing.push_back(ca_name);
  std::string out;
  for (std::size_t i = 0; i < missing.size(); ++i)
    out += (i == 0 ? "" : i + 1 == missing.size() ? " and " : ", ") + std::string(missing[i]);
  return out;
}

namespace {

// ---- reading and checking the PEM files (OpenSSL) ----

// OpenSSL's queued errors, reasons only, and the queue cleared.
std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    const char* r = ERR_reason_error_string(e);
    out += (out.empty() ? "" : "; ") + std::string(r ? r : "unknown error");
  }
  return out.empty() ? "no details" : out;
}

bool read_file(const std::string& path, const std::string& what, std::string& text, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot read the " + what + " " + path + " (" + std::strerror(errno) + ")";
    return false;
  }
  std::ostringstream s;
  s << in.rdbuf();
  text = s.str();
  return true;
}

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
using Cert = std::unique_ptr<X509, decltype(&X509_free)>;
using Key = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

Bio memory(const std::string& text) { return Bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())), BIO_free); }

// Every certificate of a PEM text, in order; none (and `error`) when it holds
// none or a block does not parse.
std::vector<Cert> read_certificates(const std::string& text, const std::string& path, const std::string& what,
                                    std::string& error) {
  std::vector<Cert> certs;
  ERR_clear_error();
  auto bio = memory(text);
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(x, X509_free);
  const unsigned long last = ERR_peek_last_error();
  // The end of the text is "no start line"; anything else is a bad block.
  if (!certs.empty() && ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE) {
    ERR_clear_error();
    return certs;
  }
  error = certs.empty() ? "the " + what + " " + path + " holds no PEM certificate (" + openssl_errors() + ")"
                        : "the " + what + " " + path + ": certificate " + std::to_string(certs.size() + 1) +
                              " does not parse (" + openssl_errors() + ")";
  certs.clear();
  return certs;
}

std::vector<unsigned char> der(X509* x) {
  const int n = i2d_X509(x, nullptr);
  if (n <= 0) throw std::runtime_error("a certificate does not encode as DER (" + openssl_errors() + ")");
  std::vector<unsigned char> out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_X509(x, &p);
  return out;
}

// No password prompt on the terminal for an encrypted key: it is refused.
int no_password(char*, int, int, void*) { return -1; }

}  // namespace

kj::Own<kj::TlsContext> tls_context(const TlsFiles& files, bool server, std::string& error) {
  const std::string ca_what = server ? "TLS client CA file" : "TLS CA file";
  std::string cert_text, key_text, ca_text;
  if (!read_file(files.cert, "TLS certificate", cert_text, error) || !read_file(files.key, "TLS key", key_text, error) ||
      !read_file(files.ca, ca_what, ca_text, error))
    return {};
  std::vector<Cert> chain = read_certificates(cert_text, files.cert, "TLS certificate", error);
  if (chain.empty()) return {};
  if (chain.size() > 10) {  // kj's limit, and OpenSSL's default verify depth
    error = "the TLS certificate " + files.cert + " holds a chain of " + std::to_string(chain.size()) +
            " certificates; at most 10 are allowed";
    return {};
  }
  ERR_clear_error();
  auto key_bio = memory(key_text);
  Key key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, no_password, nullptr), EVP_PKEY_free);
  if (!key) {
    error = "the TLS key " + files.key + " is not an unencrypted PEM private key (" + openssl_errors() + ")";
    return {};
  }
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    error = "the TLS key " + files.key + " does not belong to the certificate " + files.cert;
    return {};
  }
  std::vector<Cert> cas = read_certificates(ca_text, files.ca, ca_what, error);
  if (cas.empty()) return {};

  try {
    // The keypair and the trusted CAs as kj holds them (DER, parsed again).
    std::vector<std::vector<unsigned char>> chain_der;
    for (const Cert& c : chain) chain_der.push_back(der(c.get()));
    std::vector<kj::ArrayPtr<const kj::byte>> pieces;
    for (const auto& d : chain_der) pieces.push_back(kj::arrayPtr(d.data(), d.size()));
    kj::TlsKeypair keypair{kj::TlsPrivateKey(kj::StringPtr(key_text.c_str())),
                           kj::TlsCertificate(kj::arrayPtr(pieces.data(), pieces.size()))};
    // kj trusts the first certificate of each TlsCertificate: one per CA.
    kj::Vector<kj::TlsCertificate> trusted;
    for (const Cert& c : cas) {
      auto d = der(c.get());
      trusted.add(kj::TlsCertificate(kj::arrayPtr(d.data(), d.size())));
    }
    kj::TlsContext::Options o;
    o.useSystemTrustStore = false;  // only the CAs given
    o.verifyClients = server;       // mutual TLS: a client without a trusted certificate is refused
    o.trustedCertificates = trusted.asPtr();
    o.defaultKeypair = keypair;
    o.minVersion = kj::TlsVersion::TLS_1_2;
    return kj::heap<kj::TlsContext>(kj::mv(o));
  } catch (const kj::Exception& e) {
    error = "cannot set up TLS with " + files.cert + ", " + files.key + " and " + files.ca + ": " + tls_reason(e);
    return {};
  } catch (const std::exception& e) {
    error = "cannot set up TLS with " + files.cert + ", " + files.key + " and " + files.ca + ": " + e.what();
    return {};
  }
}

std::string tls_reason(const kj::Exception& e) {
  std::string d = e.getDescription().cStr();
  // kj: `OpenSSL error; message = error:0A000086:SSL routines::certificate
  // verify failed` (one line per queued error), `TLS peer's certificate is
  // not trusted; reason = ...`, or `expected CONDITION; MESSAGE`.
  const std::string openssl = "OpenSSL error; message = ";
  if (d.rfind(openssl, 0) == 0) d = d.substr(openssl.size());
  if (d.rfind("expected ", 0) == 0)
    if (auto at = d.find("; "); at != std::string::npos) d = d.substr(at + 2);
  if (auto at = d.find("; reason = "); at != std::string::npos) d.replace(at, 11, ": ");
  std::string out;
  std::istringstream lines(d);
  for (std::string line; std::getline(lines, line);) {
    // error:CODE:LIBRARY:FUNCTION:REASON -> REASON
    if (line.rfind("error:", 0) == 0) {
      std::size_t at = 0;
      for (int colons = 0; colons < 4 && at != std::string::npos; ++colons) at = line.find(':', at + 1);
      if (at != std::string::npos) line = line.substr(at + 1);
    }
    if (!line.empty()) out += (out.empty() ? "" : "; ") + line;
  }
  return out.empty() ? d : out;
}

kj::Promise<kj::Own<kj::AsyncIoStream>> tls_connect(kj::TlsContext& tls, kj::Own<kj::AsyncIoStream> stream,
                                                     const std::string& name) {
  return tls.wrapClient(kj::mv(stream), name).then([](kj::Own<kj::AsyncIoStream> s) {
    auto byte = kj::heap<unsigned char>(0);
    auto read = s->tryRead(byte.get(), 1, 1);
    return read.then([s = kj::mv(s), byte = kj::mv(byte)](std::size_t n) mutable -> kj::Own<kj::AsyncIoStream> {
      if (n != 1 || *byte != tls_accepted)
        kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "the server closed the connection without accepting "
                                                           "this client's certificate"));
      return kj::mv(s);
    });
  });
}

kj::Promise<kj::Own<kj::AsyncIoStream>> tls_accept(kj::TlsContext& tls, kj::Own<kj::AsyncIoStream> stream) {
  return tls.wrapServer(kj::mv(stream)).then([](kj::Own<kj::AsyncIoStream> s) {
    auto written = s->write(&tls_accepted, 1);
    return written.then([s = kj::mv(s)]() mutable { return kj::mv(s); });
  });
}

}  // namespace marshal::engine::remote
