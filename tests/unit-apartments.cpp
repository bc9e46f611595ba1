// marshal tests: apartments (TYPEMAP.md, Apartments).
// The client apartment x class threading table (direct or proxied, and the
// thread each call ran on), wrong-apartment errors, single-use tokens, a
// callback into an STA that waits for its own outgoing call, an STA that ends
// under its proxies, serialization (STA, neutral) and concurrency (MTA), a
// stress of 8 threads x 2,500 proxied calls into one STA object, owner
// delivery of callbacks to an STA. Assertions run on the test thread; other
// threads record what they saw.
#include "call_support.hpp"

#include "fixtures/objects.h"
#include "marshal/marshal.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

using namespace marshal::test;
using marshal::apartment_scope;
using marshal::object;

namespace {

marshal::library& lib() {
  static marshal::library l(source_path("tests/fixtures/objects.json"));
  return l;
}

std::int32_t live() { return lib().function<std::int32_t()>("objects_live")(); }
std::uint64_t me() { return static_cast<std::uint64_t>(pthread_self()); }

// Runs f on a new thread and waits for it; an exception comes back as its message.
std::string on_thread(const std::function<void()>& f) {
  std::string failure;
  std::thread t([&] {
    try {
      f();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  t.join();
  return failure;
}

std::uint64_t host_sta_thread() {
  std::uint64_t id = 0;
  std::string error;
  marshal::engine::run_in(marshal::engine::host_sta(), [&] { id = me(); }, error);
  return id;
}

// An STA on a thread of its own, running its message loop; run() executes
// code there (through the engine's own cross-apartment call).
struct StaThread {
  std::shared_ptr<marshal::engine::Apartment> apt;
  std::atomic<bool> stop{false};
  std::thread thread;
  StaThread() {
    auto ready = std::make_shared<std::promise<std::shared_ptr<marshal::engine::Apartment>>>();
    auto got = ready->get_future();
    thread = std::thread([this, ready] {
      std::string error;
      auto a = marshal::engine::enter_sta(error);
      ready->set_value(a);
      a->run_until([this] { return stop.load(); });
      marshal::engine::leave_apartment();
    });
    apt = got.get();
  }
  void run(const std::function<void()>& f) {
    std::string error;
    bool ok = marshal::engine::run_in(apt, f, error);
    INFO(error);
    REQUIRE(ok);
  }
  void end() {
    if (!thread.joinable()) return;
    stop = true;
    apt->wake();
    thread.join();
  }
  ~StaThread() { end(); }
};

// Runs f on a thread of its own and waits at most `limit` for it. A deadlock
// must fail the suite, not hang it: past the limit the test program reports
// and ends (the stuck threads cannot be unwound).
std::string within(std::chrono::seconds limit, const char* what, std::function<void()> f) {
  auto done = std::make_shared<std::promise<std::string>>();
  auto finished = done->get_future();
  std::thread([f = std::move(f), done] {
    std::string failure;
    try {
      f();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    done->set_value(failure);
  }).detach();
  if (finished.wait_for(limit) == std::future_status::timeout) {
    std::fprintf(stderr, "FATAL: deadlock: %s did not finish within %lld s\n", what,
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::_Exit(3);
  }
  return finished.get();
}

// A host ICounter whose Add calls into a neutral probe: it re-enters the
// probe when the probe's CallBack is what called it.
struct Reenter {
  object probe;
  std::atomic<std::uint64_t> ran_on{0};
  std::int32_t Add(std::int32_t by) {
    ran_on = me();
    return static_cast<std::int32_t>(probe.call<std::int64_t>("Enter", 0)) + by;
  }
  std::int32_t Get() { return 0; }
  object make() {
    std::shared_ptr<Reenter> self(this, [](Reenter*) {});  // owned by the test, which outlives the object
    return lib().implement(self, {"ICounter"}).method("Add", &Reenter::Add).method("Get", &Reenter::Get).make();
  }
};

// A host ICounter whose Add passes the call on to another ICounter through
// native code (counter_add_direct), after telling that it is running.
struct Relay {
  object target;
  std::atomic<bool> inside{false};
  std::int32_t Add(std::int32_t by) {
    inside = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the other caller starts to wait meanwhile
    return lib().function<std::int32_t(object, std::int32_t)>("counter_add_direct")(target, by);
  }
  std::int32_t Get() { return 0; }
  object make() {
    std::shared_ptr<Relay> self(this, [](Relay*) {});
    return lib().implement(self, {"ICounter"}).method("Add", &Relay::Add).method("Get", &Relay::Get).make();
  }
};

struct Cell {
  bool proxied = false;
  std::uint64_t ran_on = 0;
  std::uint64_t client = 0;
  std::string error;
};

}  // namespace

TEST_SUITE("apartments") {
  TEST_CASE("client apartment x class threading: direct or proxied, and where each call runs") {
    const char* classes[] = {"ProbeApartment", "ProbeFree", "ProbeBoth", "ProbeNeutral"};
    const char* threading[] = {"apartment", "free", "both", "neutral"};
    Cell cells[2][4];
    for (int client = 0; client < 2; ++client)
      for (int k = 0; k < 4; ++k) {
        Cell& c = cells[client][k];
        c.error = on_thread([&] {
          apartment_scope a(client == 0 ? apartment_scope::kind::sta : apartment_scope::kind::mta);
          c.client = me();
          object p = lib().create(classes[k]);
          c.proxied = p.is_proxy();
          c.ran_on = p.call<std::uint64_t>("Thread");
          CHECK_NOTHROW(p.call<std::int64_t>("Enter", 0));
        });
      }
    const std::uint64_t host = host_sta_thread();
    auto where = [&](const Cell& c) -> std::string {
      if (c.ran_on == c.client) return "the client's thread";
      if (c.ran_on == host) return "the host STA's thread";
      return "an MTA thread of the engine";
    };
    std::ostringstream table;
    table << "\nclient \\ threading | apartment | free | both | neutral\n";
    for (int client = 0; client < 2; ++client) {
      table << (client == 0 ? "STA" : "MTA");
      for (int k = 0; k < 4; ++k)
        table << " | " << (cells[client][k].proxied ? "proxied, " : "direct, ") << where(cells[client][k]);
      table << "\n";
    }
    MESSAGE(table.str());
    for (int client = 0; client < 2; ++client)
      for (int k = 0; k < 4; ++k) {
        INFO((client == 0 ? "STA" : "MTA") << " x " << threading[k] << ": " << cells[client][k].error);
        CHECK(cells[client][k].error.empty());
      }
    // STA client
    CHECK_FALSE(cells[0][0].proxied);  // apartment: created in the caller's STA
    CHECK(cells[0][0].ran_on == cells[0][0].client);
    CHECK(cells[0][1].proxied);  // free: lives in the MTA, the STA gets a proxy
    CHECK(cells[0][1].ran_on != cells[0][1].client);
    CHECK(cells[0][1].ran_on != host);
    CHECK_FALSE(cells[0][2].proxied);  // both: where it is created
    CHECK(cells[0][2].ran_on == cells[0][2].client);
    CHECK_FALSE(cells[0][3].proxied);  // neutral: the caller's thread
    CHECK(cells[0][3].ran_on == cells[0][3].client);
    // MTA client
    CHECK(cells[1][0].proxied);  // apartment from the MTA: lives in the host STA
    CHECK(cells[1][0].ran_on == host);
    CHECK_FALSE(cells[1][1].proxied);  // free: the MTA itself
    CHECK(cells[1][1].ran_on == cells[1][1].client);
    CHECK_FALSE(cells[1][2].proxied);
    CHECK(cells[1][2].ran_on == cells[1][2].client);
    CHECK_FALSE(cells[1][3].proxied);
    CHECK(cells[1][3].ran_on == cells[1][3].client);
    CHECK(live() == 0);
  }

  TEST_CASE("a raw reference from the wrong apartment is an error naming the interface and both apartments") {
    StaThread sta;
    object p;
    marshal::method<std::uint64_t()> bound;
    sta.run([&] {
      p = lib().create("ProbeApartment");
      bound = p.bind<std::uint64_t()>("Thread");
    });
    std::string from_mta, from_bound, from_none;
    on_thread([&] {
      apartment_scope a(apartment_scope::kind::mta);
      try { p.call<std::uint64_t>("Thread"); } catch (const marshal::error& e) { from_mta = e.what(); }
      try { bound(); } catch (const marshal::error& e) { from_bound = e.what(); }
    });
    try { p.call<std::uint64_t>("Thread"); } catch (const marshal::error& e) { from_none = e.what(); }
    INFO(from_mta);
    CHECK(from_mta.find("IProbe.Thread: wrong apartment: this IProbe reference belongs to STA ") != std::string::npos);
    CHECK(from_mta.find("the calling thread is in the MTA") != std::string::npos);
    CHECK(from_bound.find("wrong apartment") != std::string::npos);  // the bound fast path checks too
    CHECK(from_none.find("the calling thread is in no apartment") != std::string::npos);
    sta.run([&] {
      CHECK(bound() == me());  // in its own apartment the bound method is direct
      bound = marshal::method<std::uint64_t()>();
      p = object();
    });
    sta.end();
    CHECK(live() == 0);
  }

  TEST_CASE("tokens: marshaled in the owner apartment, unmarshaled once into a proxy, or the object back home") {
    StaThread sta;
    object p;
    std::uint64_t t1 = 0, t2 = 0, sta_id = 0;
    sta.run([&] {
      p = lib().create("ProbeApartment");
      t1 = marshal::marshal_interface(p);
      t2 = marshal::marshal_interface(p);
      sta_id = me();
    });
    bool proxied = false, same = false;
    std::uint64_t ran_on = 0;
    std::string reuse, nowhere;
    on_thread([&] {
      apartment_scope a(apartment_scope::kind::mta);
      object q = marshal::unmarshal_interface(t1);
      proxied = q.is_proxy();
      same = q == p;  // COM identity, through the proxy
      ran_on = q.call<std::uint64_t>("Thread");
      try { marshal::unmarshal_interface(t1); } catch (const marshal::error& e) { reuse = e.what(); }
    });
    try { marshal::unmarshal_interface(t2); } catch (const marshal::error& e) { nowhere = e.what(); }
    CHECK(proxied);
    CHECK(same);
    CHECK(ran_on == sta_id);  // the call ran in the owner STA
    CHECK(reuse.find("token " + std::to_string(t1) + " is unknown or was already used") != std::string::npos);
    CHECK(nowhere.find("in no apartment") != std::string::npos);
    std::uint64_t t3 = 0;
    sta.run([&] {
      object back = marshal::unmarshal_interface(t2);  // home again: the direct reference
      CHECK_FALSE(back.is_proxy());
      CHECK(back == p);
      t3 = marshal::marshal_interface(p);
      p = object();
    });
    // A proxy keeps the object alive after the owner dropped its own reference.
    std::int64_t calls = -1;
    on_thread([&] {
      apartment_scope a(apartment_scope::kind::mta);
      object q = marshal::unmarshal_interface(t3);
      q.call<std::int64_t>("Enter", 0);
      calls = q.call<std::int64_t>("Calls");
    });
    CHECK(calls == 1);
    sta.end();
    CHECK(live() == 0);
  }

  TEST_CASE("a callback into an STA that waits for its own cross-apartment call runs there, no deadlock") {
    struct Mine {
      std::int32_t n = 0;
      std::thread::id ran_on;
      std::int32_t Add(std::int32_t by) {
        ran_on = std::this_thread::get_id();
        return n += by;
      }
      std::int32_t Get() const { return n; }
    };
    auto mine = std::make_shared<Mine>();
    std::thread::id sta_thread;
    std::int64_t sum = 0;
    std::int32_t native_after = 0;
    bool back_native_direct = false, back_native_same = false, back_host_same = false, store_proxied = false;
    std::string failure = on_thread([&] {
      apartment_scope a(apartment_scope::kind::sta);
      sta_thread = std::this_thread::get_id();
      object store = lib().create("FreeStore");  // lives in the MTA: a proxy here
      store_proxied = store.is_proxy();
      object host = lib().implement(mine, {"ICounter"}).method("Add", &Mine::Add).method("Get", &Mine::Get).make();
      object native = lib().create("Counter", 10);  // "both": lives here
      store.call<std::int32_t>("Put", host);    // a host object made in this STA
      store.call<std::int32_t>("Put", native);  // native code in the MTA gets a forwarder through a proxy
      // An MTA thread runs AddAll and calls both items back into this STA,
      // which is waiting for AddAll to return.
      sum = store.call<std::int64_t>("AddAll", 5);
      native_after = native.call<std::int32_t>("Get");
      object back;
      store.call<std::int32_t>("Get", 1, marshal::out<object>(back));
      back_native_direct = !back.is_proxy();  // it came home: the direct reference
      back_native_same = back == native;
      store.call<std::int32_t>("Get", 0, marshal::out<object>(back));
      back_host_same = back == host;
      store.call<std::int32_t>("Clear");
    });
    INFO(failure);
    CHECK(failure.empty());
    CHECK(store_proxied);
    CHECK(mine->ran_on == sta_thread);
    CHECK(mine->n == 5);
    CHECK(native_after == 15);
    CHECK(sum == 5 + 15);
    CHECK(back_native_direct);
    CHECK(back_native_same);
    CHECK(back_host_same);
    CHECK(live() == 0);
  }

  TEST_CASE("an STA that has ended gives its proxies a clear error, never a hang") {
    for (bool leaves : {true, false}) {  // leave_apartment(), or the thread just exits
      CAPTURE(leaves);
      std::uint64_t t1 = 0, t2 = 0;
      std::promise<void> tokens_ready, proxy_ready;
      std::thread sta([&] {
        std::string error;
        auto a = marshal::engine::enter_sta(error);
        {
          object p = lib().create("ProbeApartment");
          t1 = marshal::marshal_interface(p);
          t2 = marshal::marshal_interface(p);
          tokens_ready.set_value();
          auto got = proxy_ready.get_future();
          // Serve calls until the other side made its proxy and used it once.
          a->run_until([&] { return got.wait_for(std::chrono::seconds(0)) == std::future_status::ready; });
        }
        if (leaves) marshal::engine::leave_apartment();
      });
      tokens_ready.get_future().wait();
      object q;
      std::string first, later, unused_token;
      on_thread([&] {
        apartment_scope a(apartment_scope::kind::mta);
        q = marshal::unmarshal_interface(t1);
        try { q.call<std::int64_t>("Enter", 0); } catch (const marshal::error& e) { first = e.what(); }
      });
      proxy_ready.set_value();
      sta.join();
      on_thread([&] {
        apartment_scope a(apartment_scope::kind::mta);
        try { q.call<std::int64_t>("Enter", 0); } catch (const marshal::error& e) { later = e.what(); }
        try { marshal::unmarshal_interface(t2); } catch (const marshal::error& e) { unused_token = e.what(); }
        q = object();
      });
      CHECK(first.empty());
      INFO(later);
      CHECK(later.find("has ended") != std::string::npos);
      CHECK(unused_token.find("which has ended") != std::string::npos);
      CHECK(live() == 0);  // released on the STA's thread as it ended
    }
  }

  TEST_CASE("stress: 8 threads make 20,000 proxied calls into one STA object, serialized, exact count") {
    StaThread sta;
    object p;
    std::vector<std::uint64_t> tokens(8);
    std::uint64_t sta_id = 0;
    sta.run([&] {
      p = lib().create("ProbeApartment");
      for (auto& t : tokens) t = marshal::marshal_interface(p);
      sta_id = me();
    });
    std::vector<std::string> failures(8);
    std::vector<std::uint64_t> ran_on(8);
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i)
      threads.emplace_back([&, i] {
        try {
          apartment_scope a(apartment_scope::kind::mta);
          object q = marshal::unmarshal_interface(tokens[static_cast<std::size_t>(i)]);
          for (int k = 0; k < 2500; ++k) q.call<std::int64_t>("Enter", 0);
          ran_on[static_cast<std::size_t>(i)] = q.call<std::uint64_t>("Thread");
        } catch (const std::exception& e) {
          failures[static_cast<std::size_t>(i)] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    for (const auto& f : failures) CHECK(f.empty());
    for (auto id : ran_on) CHECK(id == sta_id);
    std::int64_t calls = 0;
    std::int32_t max_inside = 0;
    sta.run([&] {
      calls = p.call<std::int64_t>("Calls");
      max_inside = p.call<std::int32_t>("MaxInside");
      p = object();
    });
    CHECK(calls == 20000);
    CHECK(max_inside == 1);  // one at a time, on the STA's thread
    sta.end();
    CHECK(live() == 0);
  }

  TEST_CASE("MTA objects are called concurrently; neutral ones on the caller's thread, one call at a time") {
    std::int32_t met[2] = {0, 0};
    std::int32_t neutral_max = 0;
    std::int64_t neutral_calls = 0;
    bool caller_threads = true;
    std::string failure = on_thread([&] {
      apartment_scope a(apartment_scope::kind::mta);
      object free_obj = lib().create("ProbeFree");
      object neutral = lib().create("ProbeNeutral");
      // Two MTA threads inside one free-threaded object at once: no engine lock.
      std::thread t0([&] {
        apartment_scope m(apartment_scope::kind::mta);
        met[0] = free_obj.call<std::int32_t>("Rendezvous", 2, 10000);
      });
      std::thread t1([&] {
        apartment_scope m(apartment_scope::kind::mta);
        met[1] = free_obj.call<std::int32_t>("Rendezvous", 2, 10000);
      });
      t0.join();
      t1.join();
      // Neutral: 2 MTA and 2 STA threads, directly, serialized by the engine.
      std::vector<std::thread> ts;
      std::atomic<bool> all_on_caller{true};
      for (int i = 0; i < 4; ++i)
        ts.emplace_back([&, i] {
          apartment_scope m(i < 2 ? apartment_scope::kind::mta : apartment_scope::kind::sta);
          for (int k = 0; k < 10; ++k) neutral.call<std::int64_t>("Enter", 1000);
          if (neutral.call<std::uint64_t>("Thread") != me()) all_on_caller = false;
        });
      for (auto& t : ts) t.join();
      neutral_max = neutral.call<std::int32_t>("MaxInside");
      neutral_calls = neutral.call<std::int64_t>("Calls");
      caller_threads = all_on_caller;
    });
    INFO(failure);
    CHECK(failure.empty());
    CHECK(met[0] == 1);
    CHECK(met[1] == 1);
    CHECK(neutral_max == 1);
    CHECK(neutral_calls == 40);
    CHECK(caller_threads);
    CHECK(live() == 0);
  }

  TEST_CASE("a neutral object re-entered through a host callback runs at once: on one thread, through an apartment hop") {
    // TYPEMAP.md, neutral: a call that re-enters on the thread already inside,
    // through a callback chain, runs at once and never deadlocks.
    std::int32_t same_thread[2] = {0, 0};
    bool same_ran_here[2] = {false, false};
    std::int32_t hop = 0, relayed = 0;
    std::int64_t waiter_calls = 0;
    std::uint64_t hop_ran_on = 0, sta2_thread = 0;
    std::string errors;
    std::string failure = within(std::chrono::seconds(60), "re-entering a neutral object", [&] {
      // 1. One thread: CallBack -> the host's Add -> Enter on the same object.
      for (int k = 0; k < 2; ++k)
        errors += on_thread([&] {
          apartment_scope a(k == 0 ? apartment_scope::kind::mta : apartment_scope::kind::sta);
          Reenter impl;
          impl.probe = lib().create("ProbeNeutral");
          object h = impl.make();
          same_thread[k] = impl.probe.call<std::int32_t>("CallBack", h, 10);
          same_ran_here[k] = impl.ran_on == me();
          impl.probe = object();
        });
      // 2. Through an apartment hop: the host object lives in another STA, so
      //    its Add runs on that STA's thread while the caller waits inside.
      StaThread sta2;
      Reenter impl;
      object h;
      std::string error;
      marshal::engine::run_in(sta2.apt, [&] {
        sta2_thread = me();
        h = impl.make();
      }, error);
      errors += error;
      errors += on_thread([&] {
        apartment_scope a(apartment_scope::kind::mta);
        impl.probe = lib().create("ProbeNeutral");
        hop = impl.probe.call<std::int32_t>("CallBack", h, 10);
        hop_ran_on = impl.ran_on;
        impl.probe = object();
      });
      // 3. An STA that waits to enter keeps running calls queued for it: the
      //    call chain inside needs that STA (its host object lives there)
      //    before it can leave.
      Reenter there;
      object in_sta2;
      marshal::engine::run_in(sta2.apt, [&] { in_sta2 = there.make(); }, error);
      errors += error;
      errors += on_thread([&] {
        apartment_scope a(apartment_scope::kind::mta);
        object probe = lib().create("ProbeNeutral");
        there.probe = probe;
        Relay relay;
        relay.target = in_sta2;
        object g = relay.make();
        std::thread waiter([&] {
          std::string e;
          marshal::engine::run_in(sta2.apt, [&] {
            while (!relay.inside) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            try {
              waiter_calls = probe.call<std::int64_t>("Enter", 0);
            } catch (const std::exception& x) {
              e = x.what();
            }
          }, e);
          errors += e;
        });
        relayed = probe.call<std::int32_t>("CallBack", g, 10);
        waiter.join();
        there.probe = object();
      });
      h = object();
      marshal::engine::run_in(sta2.apt, [&] { in_sta2 = object(); }, error);
      sta2.end();
    });
    INFO(failure << errors);
    CHECK(failure.empty());
    CHECK(errors.empty());
    CHECK(same_thread[0] == 11);  // Enter's count (1) + 10
    CHECK(same_thread[1] == 11);
    CHECK(same_ran_here[0]);
    CHECK(same_ran_here[1]);
    CHECK(hop == 11);
    CHECK(hop_ran_on == sta2_thread);
    CHECK(relayed == 11);
    CHECK(waiter_calls == 2);  // after the chain inside left
    CHECK(live() == 0);
  }

  TEST_CASE("a neutral object serializes 8 threads exactly, with re-entrant call chains among them") {
    std::int32_t max_inside = 0;
    std::int64_t calls = 0;
    std::atomic<bool> all_on_caller{true};
    std::string errors;
    std::mutex errors_mutex;
    const int threads = 8, per = 25;
    std::string failure = within(std::chrono::seconds(120), "8 threads on a neutral object", [&] {
      errors += on_thread([&] {
        apartment_scope a(apartment_scope::kind::mta);
        object probe = lib().create("ProbeNeutral");
        std::vector<std::thread> ts;
        for (int i = 0; i < threads; ++i)
          ts.emplace_back([&, i] {
            try {
              apartment_scope m(i % 2 == 0 ? apartment_scope::kind::mta : apartment_scope::kind::sta);
              Reenter impl;
              impl.probe = probe;
              object h = impl.make();
              for (int k = 0; k < per; ++k) {
                probe.call<std::int32_t>("CallBack", h, 0);  // Enter inside CallBack
                probe.call<std::int64_t>("Enter", 100);
                if (probe.call<std::uint64_t>("Thread") != me()) all_on_caller = false;
              }
              impl.probe = object();
            } catch (const std::exception& e) {
              std::lock_guard lock(errors_mutex);
              errors += e.what();
            }
          });
        for (auto& t : ts) t.join();
        max_inside = probe.call<std::int32_t>("MaxInside");
        calls = probe.call<std::int64_t>("Calls");
      });
    });
    INFO(failure << errors);
    CHECK(failure.empty());
    CHECK(errors.empty());
    CHECK(max_inside == 1);               // never two calls inside Enter at once
    CHECK(calls == threads * per * 2);    // every call counted once
    CHECK(all_on_caller.load());          // no proxy, no thread switch
    CHECK(live() == 0);
  }

  TEST_CASE("callbacks with delivery owner made in an STA run on that STA's thread, from its message loop") {
    Bound f("tests/fixtures/callbacks.json");
    std::atomic<long> calls{0}, elsewhere{0};
    std::int64_t joined = 0;
    const int threads = 4, per = 250;
    std::string failure = on_thread([&] {
      apartment_scope a(apartment_scope::kind::sta);
      const auto owner = std::this_thread::get_id();
      auto on_owner = std::make_shared<marshal::engine::HostFunction>(marshal::engine::HostFunction{
          "on_owner", [&](const std::vector<marshal::engine::Value>& args, marshal::engine::Value& r, std::string&) {
            if (std::this_thread::get_id() != owner) ++elsewhere;
            ++calls;
            r = marshal::engine::Value(I(args[0]) + 1);
            return true;
          }});
      std::string error;
      auto registered = f.lib->callback("OwnerFn", on_owner, error);
      REQUIRE(registered);
      f.call("start_async", {marshal::engine::Value(registered), threads, per});
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      a.run_until([&] { return calls.load() == threads * per || std::chrono::steady_clock::now() > deadline; });
      joined = I(f.call("join_async").ret);
      registered->release();
    });
    INFO(failure);
    CHECK(failure.empty());
    std::int64_t expected = 0;
    for (int i = 0; i < per; ++i) expected += i + 1;
    CHECK(joined == expected * threads);
    CHECK(calls.load() == threads * per);
    CHECK(elsewhere.load() == 0);
  }

  TEST_CASE("entering twice is an error; leaving is idempotent") {
    std::string second;
    on_thread([&] {
      apartment_scope a(apartment_scope::kind::sta);
      try { apartment_scope b(apartment_scope::kind::mta); } catch (const marshal::error& e) { second = e.what(); }
    });
    CHECK(second.find("already in STA ") != std::string::npos);
  }
}
