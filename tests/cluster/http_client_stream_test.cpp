// HttpClient::stream() against an in-process httplib server that writes a
// chunked body piece by piece, as etcd's /v3/watch does.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "cluster/http_client.hpp"
#include "support/prometheus_process.hpp"  // free_loopback_port

namespace gpucluster {
namespace {

using namespace std::chrono_literals;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr auto kSlack = 5s;
#else
constexpr auto kSlack = 1500ms;
#endif

class StreamServer : public ::testing::Test {
 protected:
  void SetUp() override {
    // Three messages split across chunks, 100 ms apart, then the body ends.
    server_.Post("/finite", [](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/json", [step = 0](std::size_t, httplib::DataSink& sink) mutable {
        static const std::vector<std::string> pieces = {"{\"n\":1}\n{\"n\"", ":2}\n", "{\"n\":3,\"s\":\"}{\"}\n"};
        if (step == static_cast<int>(pieces.size())) {
          sink.done();
          return true;
        }
        if (step > 0) std::this_thread::sleep_for(100ms);
        const std::string& piece = pieces[static_cast<std::size_t>(step++)];
        return sink.write(piece.data(), piece.size());
      });
    });
    // One message, then silence until the server stops (a watch with no changes).
    server_.Post("/endless", [this](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/json",
                                       [this, sent = false](std::size_t, httplib::DataSink& sink) mutable {
                                         if (!sent) {
                                           sent = true;
                                           return sink.write("{\"created\":true}\n", 17);
                                         }
                                         std::this_thread::sleep_for(20ms);
                                         return !stopping_.load() && sink.is_writable();
                                       });
    });
    server_.Post("/huge", [](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/json", [](std::size_t, httplib::DataSink& sink) {
        const std::string message = "{\"pad\":\"" + std::string(4096, 'x') + "\"}\n";
        sink.write(message.data(), message.size());
        sink.done();
        return true;
      });
    });
    server_.Post("/cut", [](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("application/json", [](std::size_t, httplib::DataSink& sink) {
        sink.write("{\"a\":", 5);
        sink.done();  // the body ends inside a message
        return true;
      });
    });
    server_.Post("/missing", [](const httplib::Request&, httplib::Response& res) {
      res.status = 404;
      res.set_content(R"({"error":"not here","code":5})", "application/json");
    });
    server_.Get("/plain", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok", "text/plain"); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  void TearDown() override {
    stopping_ = true;
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  HttpClient client() { return HttpClient(HttpUrl{"127.0.0.1", port_}); }

  httplib::Server server_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  int port_ = 0;
};

TEST_F(StreamServer, DeliversEachMessageAsItArrives) {
  HttpClient http = client();
  std::vector<std::string> messages;
  std::vector<std::chrono::steady_clock::time_point> arrivals;
  const auto result = http.stream("POST", "/finite", "{}", std::nullopt, {}, [&](std::string_view message) {
    messages.emplace_back(message);
    arrivals.push_back(std::chrono::steady_clock::now());
    return true;
  });
  EXPECT_EQ(result.status, 200);
  EXPECT_EQ(result.end, HttpStreamEnd::finished);
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[0], "{\"n\":1}");
  EXPECT_EQ(messages[1], "{\"n\":2}");
  EXPECT_EQ(messages[2], "{\"n\":3,\"s\":\"}{\"}");
  // The first message came before the server had written the rest (200 ms of pauses).
  EXPECT_GE(arrivals[2] - arrivals[0], 150ms);
  // The client works for plain requests after a stream.
  EXPECT_EQ(http.request("GET", "/plain", "", std::nullopt, 2s).body, "ok");
}

TEST_F(StreamServer, HandlerCanStopTheStream) {
  HttpClient http = client();
  int seen = 0;
  const auto result =
      http.stream("POST", "/finite", "{}", std::nullopt, {}, [&](std::string_view) { return ++seen < 2; });
  EXPECT_EQ(result.end, HttpStreamEnd::handler_stopped);
  EXPECT_EQ(seen, 2);
}

TEST_F(StreamServer, StopFromAnotherThreadEndsABlockedRead) {
  HttpClient http = client();
  std::stop_source stop;
  std::atomic<bool> created{false};
  std::chrono::steady_clock::time_point requested;
  std::thread stopper([&] {
    for (int i = 0; i < 500 && !created; ++i) std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(200ms);  // the client is blocked in a read now
    requested = std::chrono::steady_clock::now();
    stop.request_stop();
  });
  HttpStreamOptions options;
  options.idle_timeout = 30s;
  const auto result = http.stream(
      "POST", "/endless", "{}", std::nullopt, options,
      [&](std::string_view) {
        created = true;
        return true;
      },
      stop.get_token());
  const auto latency = std::chrono::steady_clock::now() - requested;
  stopper.join();
  EXPECT_TRUE(created);
  EXPECT_EQ(result.end, HttpStreamEnd::stop_requested);
  EXPECT_LT(latency, kSlack);
  // An already stopped token returns at once, without connecting.
  EXPECT_EQ(
      http.stream(
              "POST", "/endless", "{}", std::nullopt, options, [](std::string_view) { return true; }, stop.get_token())
          .end,
      HttpStreamEnd::stop_requested);
}

TEST_F(StreamServer, SilenceLongerThanTheIdleTimeoutIsATransportError) {
  HttpClient http = client();
  HttpStreamOptions options;
  options.idle_timeout = 300ms;
  const auto start = std::chrono::steady_clock::now();
  try {
    http.stream("POST", "/endless", "{}", std::nullopt, options, [](std::string_view) { return true; });
    ADD_FAILURE() << "an idle stream did not time out";
  } catch (const TransportError& error) {
    EXPECT_NE(std::string(error.what()).find("300 ms"), std::string::npos) << error.what();
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 300ms + kSlack);
}

TEST_F(StreamServer, MessageOverTheBoundIsAFramingError) {
  HttpClient http = client();
  HttpStreamOptions options;
  options.max_message_bytes = 1024;
  EXPECT_THROW(http.stream("POST", "/huge", "{}", std::nullopt, options, [](std::string_view) { return true; }),
               StreamFramingError);
  options.max_message_bytes = 8192;
  int seen = 0;
  http.stream("POST", "/huge", "{}", std::nullopt, options, [&](std::string_view) { return ++seen > 0; });
  EXPECT_EQ(seen, 1);
}

TEST_F(StreamServer, BodyEndingInsideAMessageIsATransportError) {
  HttpClient http = client();
  EXPECT_THROW(http.stream("POST", "/cut", "{}", std::nullopt, {}, [](std::string_view) { return true; }),
               TransportError);
}

TEST_F(StreamServer, ErrorStatusReturnsTheBodyWithoutMessages) {
  HttpClient http = client();
  int seen = 0;
  const auto result = http.stream("POST", "/missing", "{}", std::nullopt, {}, [&](std::string_view) {
    ++seen;
    return true;
  });
  EXPECT_EQ(result.status, 404);
  EXPECT_EQ(result.body, R"({"error":"not here","code":5})");
  EXPECT_EQ(seen, 0);
}

TEST(HttpClientStream, RefusedConnectionIsATransportError) {
  HttpClient http(HttpUrl{"127.0.0.1", testing::free_loopback_port()});  // nobody listens there
  const auto start = std::chrono::steady_clock::now();
  try {
    http.stream("POST", "/", "{}", std::nullopt, {}, [](std::string_view) { return true; });
    ADD_FAILURE() << "a stream to a closed port";
  } catch (const TransportError& error) {
    EXPECT_NE(std::string(error.what()).find("connect failed"), std::string::npos) << error.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, kSlack);  // refused, not timed out
}

}  // namespace
}  // namespace gpucluster
