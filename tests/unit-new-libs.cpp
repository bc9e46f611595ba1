// marshal tests: the typemaps of issue 19's real libraries (libuuid, libbz2,
// liblzma, libcrypto, libexpat), each generated from its header with its
// questions answered. Every call goes through the engine and is compared with
// the same call made directly in C; expat's parser drives host callbacks.
#include "call_support.hpp"

#include <bzlib.h>
#include <cstring>
#include <expat.h>
#include <lzma.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <uuid/uuid.h>

using namespace marshal;
using namespace marshal::engine;
using namespace marshal::test;

namespace {

std::vector<std::uint8_t> bytes_of(const Value& v) {
  if (v.is<Bytes>()) return v.as<Bytes>().data;
  std::vector<std::uint8_t> out;
  for (const Value& e : v.as<List>()) out.push_back(static_cast<std::uint8_t>(I(e)));
  return out;
}

Bytes bytes(const std::string& s) { return Bytes{std::vector<std::uint8_t>(s.begin(), s.end())}; }

std::shared_ptr<HostFunction> host(std::string name, std::function<bool(const std::vector<Value>&, Value&, std::string&)> fn) {
  return std::make_shared<HostFunction>(HostFunction{std::move(name), std::move(fn)});
}

const std::string text =
    "marshal calls native libraries through typemaps; marshal calls native libraries through typemaps. 0123456789";

}  // namespace

TEST_SUITE("new-libs") {
  TEST_CASE("libuuid: generate, unparse, parse, compare") {
    Bound u("typemaps/libuuid.json");
    CallResult g = u.call("uuid_generate_random");
    const std::vector<std::uint8_t> id = bytes_of(u.out(g, "out"));
    REQUIRE(id.size() == 16);
    uuid_t direct;
    std::memcpy(direct, id.data(), 16);
    CHECK(I(u.call("uuid_type", {Bytes{id}}).ret) == uuid_type(direct));
    CHECK(I(u.call("uuid_type", {Bytes{id}}).ret) == UUID_TYPE_DCE_RANDOM);
    CHECK(I(u.call("uuid_variant", {Bytes{id}}).ret) == UUID_VARIANT_DCE);
    char text_direct[37];
    uuid_unparse_lower(direct, text_direct);
    const std::string lower = u.out(u.call("uuid_unparse_lower", {Bytes{id}}), "out").as<std::string>();
    CHECK(lower == text_direct);
    CHECK(lower.size() == 36);
    uuid_unparse_upper(direct, text_direct);
    CHECK(u.out(u.call("uuid_unparse_upper", {Bytes{id}}), "out").as<std::string>() == text_direct);
    CallResult parsed = u.call("uuid_parse", {lower});
    CHECK(I(parsed.ret) == 0);
    CHECK(bytes_of(u.out(parsed, "uu")) == id);
    CHECK(I(u.call("uuid_parse", {"not-a-uuid"}).ret) == -1);
    CHECK(I(u.call("uuid_compare", {Bytes{id}, Bytes{id}}).ret) == 0);
    CHECK(I(u.call("uuid_is_null", {Bytes{std::vector<std::uint8_t>(16, 0)}}).ret) == 1);
    CHECK(I(u.call("uuid_is_null", {Bytes{id}}).ret) == 0);
    // An in array shorter than its count is an error, not a read past its end.
    CHECK(u.error_of("uuid_is_null", {Bytes{{1, 2, 3}}}).find("'uu'") != std::string::npos);
  }

  TEST_CASE("libbz2: BZ2_bzBuffToBuffCompress and Decompress, as C makes them") {
    Bound b("typemaps/libbz2.json");
    CHECK(b.call("BZ2_bzlibVersion").ret.as<std::string>() == BZ2_bzlibVersion());
    std::vector<char> direct(text.size() + text.size() / 100 + 600);
    unsigned direct_len = static_cast<unsigned>(direct.size());
    REQUIRE(BZ2_bzBuffToBuffCompress(direct.data(), &direct_len, const_cast<char*>(text.data()),
                                     static_cast<unsigned>(text.size()), 9, 0, 0) == BZ_OK);
    CallResult c = b.call("BZ2_bzBuffToBuffCompress",
                          {static_cast<std::int64_t>(direct.size()), bytes(text), 9, 0, 0});  // sourceLen: computed
    CHECK(I(c.ret) == BZ_OK);
    const std::vector<std::uint8_t> packed = bytes_of(b.out(c, "dest"));
    CHECK(I(b.out(c, "destLen")) == direct_len);
    CHECK(packed == std::vector<std::uint8_t>(direct.begin(), direct.begin() + direct_len));
    CallResult d = b.call("BZ2_bzBuffToBuffDecompress",
                          {static_cast<std::int64_t>(text.size()), Bytes{packed}, 0, 0});
    CHECK(I(d.ret) == BZ_OK);
    const std::vector<std::uint8_t> back = bytes_of(b.out(d, "dest"));
    CHECK(std::string(back.begin(), back.end()) == text);
    // Too small an output buffer: the library's error, nothing written past it.
    CallResult small = b.call("BZ2_bzBuffToBuffDecompress", {4, Bytes{packed}, 0, 0});
    CHECK(I(small.ret) == BZ_OUTBUFF_FULL);
  }

  TEST_CASE("liblzma: one-shot lzma_easy_buffer_encode and lzma_stream_buffer_decode") {
    Bound x("typemaps/liblzma.json");
    CHECK(x.call("lzma_version_string").ret.as<std::string>() == lzma_version_string());
    const std::size_t bound = lzma_stream_buffer_bound(text.size());
    CHECK(static_cast<std::size_t>(I(x.call("lzma_stream_buffer_bound", {static_cast<std::int64_t>(text.size())}).ret)) == bound);
    std::vector<std::uint8_t> direct(bound);
    std::size_t direct_pos = 0;
    REQUIRE(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const std::uint8_t*>(text.data()),
                                    text.size(), direct.data(), &direct_pos, direct.size()) == LZMA_OK);
    direct.resize(direct_pos);
    CallResult e = x.call("lzma_easy_buffer_encode", {6, "LZMA_CHECK_CRC64", Value(), bytes(text), 0,
                                                      static_cast<std::int64_t>(bound)});  // in_size: computed
    CHECK(e.ret.as<std::string>() == "LZMA_OK");
    const std::vector<std::uint8_t> xz = bytes_of(x.out(e, "out"));
    CHECK(static_cast<std::size_t>(I(x.out(e, "out_pos"))) == direct_pos);
    CHECK(xz == direct);
    CallResult d = x.call("lzma_stream_buffer_decode",
                          {Value(std::uint64_t{UINT64_MAX}), 0, Value(), Bytes{xz}, 0, 0, static_cast<std::int64_t>(text.size())});
    CHECK(d.ret.as<std::string>() == "LZMA_OK");
    CHECK(static_cast<std::size_t>(I(x.out(d, "in_pos"))) == xz.size());
    const std::vector<std::uint8_t> back = bytes_of(x.out(d, "out"));
    CHECK(std::string(back.begin(), back.end()) == text);
    // Corrupt input: the library's error code, named.
    std::vector<std::uint8_t> bad = xz;
    bad[bad.size() / 2] ^= 0xff;
    CallResult c = x.call("lzma_stream_buffer_decode", {Value(std::uint64_t{UINT64_MAX}), 0, Value(), Bytes{bad}, 0, 0,
                                                        static_cast<std::int64_t>(text.size())});
    CHECK(c.ret.as<std::string>() != "LZMA_OK");
  }

  TEST_CASE("libcrypto: SHA256, EVP_Digest, OpenSSL_version") {
    Bound c("typemaps/libcrypto.json");
    CHECK(c.call("OpenSSL_version", {OPENSSL_VERSION}).ret.as<std::string>() == OpenSSL_version(OPENSSL_VERSION));
    CHECK(static_cast<unsigned long>(I(c.call("OpenSSL_version_num").ret)) == OpenSSL_version_num());
    unsigned char direct[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>("abc"), 3, direct);
    CallResult s = c.call("SHA256", {bytes("abc")});  // n: computed
    const std::vector<std::uint8_t> md = bytes_of(c.out(s, "md"));
    CHECK(md == std::vector<std::uint8_t>(direct, direct + 32));
    CHECK(md[0] == 0xba);  // FIPS 180-2's example: SHA-256("abc") = ba7816bf...
    CHECK(md[31] == 0xad);
    // EVP_Digest with the digest object EVP_sha256() returns, as an opaque pointer.
    const Value sha256 = c.call("EVP_sha256").ret;
    REQUIRE(sha256.is<Address>());
    CHECK(sha256.as<Address>().value == reinterpret_cast<std::uintptr_t>(EVP_sha256()));
    CallResult e = c.call("EVP_Digest", {bytes("abc"), sha256, Value()});
    CHECK(I(e.ret) == 1);
    CHECK(I(c.out(e, "size")) == 32);
    CHECK(bytes_of(c.out(e, "md")) == md);  // only the `size` bytes written come back
    const Value sha512 = c.call("EVP_get_digestbyname", {"SHA512"}).ret;
    CallResult e512 = c.call("EVP_Digest", {bytes(text), sha512, Value()});
    unsigned char d512[64];
    SHA512(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d512);
    CHECK(bytes_of(c.out(e512, "md")) == std::vector<std::uint8_t>(d512, d512 + 64));
    CHECK(c.call("EVP_get_digestbyname", {"no-such-digest"}).ret.is_null());
  }

  TEST_CASE("libexpat: a parser with start/end element and character data callbacks and user data") {
    Bound x("typemaps/libexpat.json");
    CHECK(x.call("XML_ExpatVersion").ret.as<std::string>() == XML_ExpatVersion());
    const Value parser = x.call("XML_ParserCreate", {Value()}).ret;
    int cookie = 0;
    const Address user{reinterpret_cast<std::uintptr_t>(&cookie)};
    std::vector<std::string> events;
    bool user_data_seen = true;
    auto check_user = [&](const Value& v) { user_data_seen = user_data_seen && v.is<Address>() && v.as<Address>().value == user.value; };
    auto start = host("start", [&](const std::vector<Value>& a, Value&, std::string&) {
      check_user(a[0]);
      std::string e = "<" + a[1].as<std::string>();
      for (const Value& att : a[2].as<List>()) e += " " + att.as<std::string>();
      events.push_back(e + ">");
      return true;
    });
    auto end = host("end", [&](const std::vector<Value>& a, Value&, std::string&) {
      check_user(a[0]);
      events.push_back("</" + a[1].as<std::string>() + ">");
      return true;
    });
    // Character data: a non-terminated string whose length is the handler's
    // `len` parameter; the host gets exactly len bytes per call.
    std::string chars;
    bool lengths_match = true;
    auto text = host("text", [&](const std::vector<Value>& a, Value&, std::string&) {
      check_user(a[0]);
      const std::string& piece = a[1].as<std::string>();
      lengths_match = lengths_match && static_cast<std::int64_t>(piece.size()) == I(a[2]);
      chars += piece;
      return true;
    });
    std::string error;
    auto start_cb = x.lib->callback("XML_StartElementHandler", start, error);
    auto end_cb = x.lib->callback("XML_EndElementHandler", end, error);
    auto text_cb = x.lib->callback("XML_CharacterDataHandler", text, error);
    INFO(error);
    REQUIRE((start_cb && end_cb && text_cb));
    x.call("XML_SetUserData", {parser, Value(user)});
    x.call("XML_SetElementHandler", {parser, Value(start_cb), Value(end_cb)});
    x.call("XML_SetCharacterDataHandler", {parser, Value(text_cb)});
    const std::string doc = "<doc id=\"7\" lang=\"en\">x<item>h\xc3\xa9 &amp; more</item><empty/>\ntail</doc>";
    CallResult r = x.call("XML_Parse", {parser, doc, 1});  // len: computed
    CHECK(r.ret.as<std::string>() == "XML_STATUS_OK");
    const std::vector<std::string> expected = {"<doc id 7 lang en>", "<item>", "</item>",
                                               "<empty>", "</empty>", "</doc>"};
    CHECK(events == expected);
    CHECK(user_data_seen);
    CHECK(lengths_match);
    // The same document parsed by expat directly, its character data collected in C.
    std::string direct_chars;
    XML_Parser direct = XML_ParserCreate(nullptr);
    XML_SetUserData(direct, &direct_chars);
    XML_SetCharacterDataHandler(direct, [](void* u, const XML_Char* s, int len) {
      static_cast<std::string*>(u)->append(s, static_cast<std::size_t>(len));
    });
    REQUIRE(XML_Parse(direct, doc.data(), static_cast<int>(doc.size()), 1) == XML_STATUS_OK);
    XML_ParserFree(direct);
    CHECK(chars == direct_chars);
    CHECK(chars == "xh\xc3\xa9 & more\ntail");

    // A malformed document: the error code and its message, as C reports them.
    // p2 is created after the first parser was freed: malloc may give it the
    // same address, and it is still a new parser, not the released one.
    x.call("XML_ParserFree", {parser});
    const Value p2 = x.call("XML_ParserCreate", {"UTF-8"}).ret;
    REQUIRE(p2.is<std::shared_ptr<HandleBox>>());
    CHECK(p2.as<std::shared_ptr<HandleBox>>() != parser.as<std::shared_ptr<HandleBox>>());
    CHECK_FALSE(p2.as<std::shared_ptr<HandleBox>>()->released);
    const std::string bad = "<a><b></a>";
    CHECK(x.call("XML_Parse", {p2, bad, 1}).ret.as<std::string>() ==
          "XML_STATUS_ERROR");
    const std::int64_t code = I(x.call("XML_GetErrorCode", {p2}).ret);
    CHECK(code == XML_ERROR_TAG_MISMATCH);
    CHECK(x.call("XML_ErrorString", {code}).ret.as<std::string>() == XML_ErrorString(XML_ERROR_TAG_MISMATCH));
    CHECK(I(x.call("XML_GetCurrentLineNumber", {p2}).ret) == 1);
    x.call("XML_ParserFree", {p2});
    start_cb->release();
    end_cb->release();
    text_cb->release();
  }
}
