// The agent's HTTP/1.1 transport (src/agent/http_server.cpp) in process, over
// real loopback sockets: keep-alive and pipelining, decoding, the limits that
// are enforced before a body is read (the head check, the body budget),
// 100-continue, the head, body, write and idle timeouts, and stop().
#include "agent/http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/loopback_connection.hpp"

namespace gpucluster::agent {
namespace {

using namespace std::chrono_literals;

using Clock = std::chrono::steady_clock;

using Client = gpucluster::testing::LoopbackConnection;

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

struct Observed {
  std::string method;
  std::string path;
  int status;
};

// A server on a free loopback port whose handler echoes the request.
class HttpServerTest : public ::testing::Test {
 protected:
  void start(HttpServerOptions options = {}, HttpHeadCheck head_check = nullptr) {
    server_ = std::make_unique<HttpServer>(
        options, [this](const HttpRequest& req, HttpResponse& res) { handle(req, res); },
        [](int status, std::string_view code, std::string_view, std::string_view field, std::string_view,
           std::string_view) {
          HttpResponse res;
          res.status = status;
          res.body = std::string(code) + " " + std::string(field);
          return res;
        },
        [this](const HttpRequest& req, const HttpResponse& res, std::chrono::nanoseconds) {
          std::lock_guard lock(mutex_);
          observed_.push_back({req.method, req.path, res.status});
        },
        std::move(head_check));
    port_ = server_->bind("127.0.0.1", 0);
    serving_ = std::async(std::launch::async, [this] { server_->serve(); });
  }

  void TearDown() override {
    if (!server_) return;
    release_handler();
    server_->stop();
    if (serving_.valid()) serving_.wait();
  }

  void handle(const HttpRequest& req, HttpResponse& res) {
    if (req.path == "/slow") {
      std::unique_lock lock(mutex_);
      in_slow_handler_ = true;
      changed_.notify_all();
      changed_.wait(lock, [this] { return released_; });
    }
    {
      std::lock_guard lock(mutex_);
      ++handled_;
    }
    res.route = "/echo";
    res.content_type = "text/plain";
    if (req.path == "/big") {  // more than the socket buffers of both ends hold
      res.body.assign(64 * 1024 * 1024, 'x');
      return;
    }
    res.body = req.method + " " + req.path;
    for (const auto& [key, value] : req.query) res.body += " [" + key + "=" + value + "]";
    if (!req.body.empty()) res.body += " body=" + req.body;
  }

  void wait_for_slow_handler() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return in_slow_handler_; });
  }
  void release_handler() {
    std::lock_guard lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }
  std::vector<Observed> observed() {
    std::lock_guard lock(mutex_);
    return observed_;
  }
  int handled() {
    std::lock_guard lock(mutex_);
    return handled_;
  }

  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::future<void> serving_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool in_slow_handler_ = false;
  bool released_ = false;
  int handled_ = 0;
  std::vector<Observed> observed_;
};

// Polls (every 10 ms, at most `patience`) until the server has closed the
// connection; the time from `since` to the close, or nullopt if it stayed open.
std::optional<std::chrono::milliseconds> time_until_closed(const Client& client, Clock::time_point since,
                                                           std::chrono::milliseconds patience) {
  const auto deadline = Clock::now() + patience;
  while (Clock::now() < deadline) {
    if (client.closed_now()) return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since);
    std::this_thread::sleep_for(10ms);
  }
  return std::nullopt;
}

TEST_F(HttpServerTest, AnswersPipelinedRequestsInOrderOnOneConnection) {
  start();
  Client client(port_);
  ASSERT_TRUE(client.connected());
  client.send(
      "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
      "GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string answers = client.read_all();
  EXPECT_EQ(count(answers, "HTTP/1.1 200 OK"), 3U) << answers;
  const std::size_t one = answers.find("GET /one");
  const std::size_t two = answers.find("POST /two body=hello");
  const std::size_t three = answers.find("GET /three");
  ASSERT_NE(one, std::string::npos) << answers;
  ASSERT_NE(two, std::string::npos) << answers;
  ASSERT_NE(three, std::string::npos) << answers;
  EXPECT_LT(one, two);
  EXPECT_LT(two, three);
}

TEST_F(HttpServerTest, KeepsHttp10ConnectionsOpenOnlyWhenAsked) {
  start();
  {
    Client client(port_);
    client.send("GET /old HTTP/1.0\r\n\r\n");
    const std::string answer = client.read_all();  // closed after one answer
    EXPECT_EQ(count(answer, "HTTP/1.1 200 OK"), 1U) << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  }
  Client client(port_);
  client.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n");
  const std::string answers = client.read_all();
  EXPECT_EQ(count(answers, "HTTP/1.1 200 OK"), 2U) << answers;
  EXPECT_NE(answers.find("Connection: keep-alive"), std::string::npos) << answers;
}

TEST_F(HttpServerTest, DecodesThePathAndTheQuery) {
  start();
  Client client(port_);
  client.send("GET /a%2Fb/c%3A0%zz?x=1+2&y=%41&flag HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string answer = client.read_all();
  // %2F and %3A decoded in the path, a malformed escape kept as written, + is a space only in the query.
  EXPECT_NE(answer.find("GET /a/b/c:0%zz [x=1 2] [y=A] [flag=]"), std::string::npos) << answer;
}

TEST_F(HttpServerTest, HeadGetsTheLengthOfTheGetAnswerButNoBody) {
  start();
  Client client(port_);
  client.send("HEAD /thing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string answer = client.read_all();
  EXPECT_NE(answer.find("Content-Length: 10\r\n"), std::string::npos) << answer;  // "GET /thing"
  EXPECT_EQ(answer.substr(answer.find("\r\n\r\n") + 4), "") << answer;
}

TEST_F(HttpServerTest, RefusesChunkedAndLengthlessBodiesBeforeReadingThem) {
  start();
  {
    Client client(port_);
    client.send("POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    const std::string answer = client.read_all();
    EXPECT_EQ(answer.rfind("HTTP/1.1 411", 0), 0U) << answer;
    EXPECT_NE(answer.find("length_required Content-Length"), std::string::npos) << answer;
  }
  {
    Client client(port_);
    client.send("POST /x HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(client.read_all().rfind("HTTP/1.1 411", 0), 0U);
  }
  for (const Observed& seen : observed()) EXPECT_EQ(seen.status, 411) << seen.path;
}

TEST_F(HttpServerTest, RefusesABodyOverTheLimitFromItsContentLength) {
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  start(options);
  Client client(port_);
  // Only the head is sent: the answer must not wait for the 5,000 bytes announced.
  client.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
  const std::string answer = client.read_all();
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0U) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;

  Client within(port_);
  within.send("POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n" +
              std::string(1000, 'a'));
  EXPECT_EQ(within.read_all().rfind("HTTP/1.1 200", 0), 0U);
}

TEST_F(HttpServerTest, RefusesLongTargetsHugeHeadsUnknownMethodsAndGarbage) {
  HttpServerOptions options;
  options.max_target_bytes = 100;
  options.max_head_bytes = 4096;
  start(options);
  const auto status_of = [&](const std::string& request) {
    Client client(port_);
    client.send(request);
    const std::string answer = client.read_all();
    return answer.size() >= 12 ? answer.substr(9, 3) : "(none: " + answer + ")";
  };
  EXPECT_EQ(status_of("GET /" + std::string(200, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n"), "414");
  EXPECT_EQ(status_of("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(8000, 'b') + "\r\n\r\n"), "431");
  EXPECT_EQ(status_of("BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n"), "400");
  EXPECT_EQ(status_of("this is not HTTP\r\n\r\n"), "400");
  EXPECT_EQ(status_of("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n"), "400");
}

TEST_F(HttpServerTest, Sends100ContinueBeforeReadingTheBody) {
  start();
  Client client(port_);
  client.send("POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  const std::string interim = client.read_some(25);
  EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  client.send("data");
  const std::string answer = client.read_all();
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0U) << answer;
  EXPECT_NE(answer.find("POST /x body=data"), std::string::npos) << answer;
}

TEST_F(HttpServerTest, TheObserverSeesRoutesAndRefusals) {
  start();
  {
    Client client(port_);
    client.send("GET /seen HTTP/1.1\r\nHost: x\r\n\r\nPOST /x HTTP/1.1\r\nHost: x\r\n\r\n");
    client.read_all();
  }
  const auto seen = observed();
  ASSERT_EQ(seen.size(), 2U);
  EXPECT_EQ(seen[0].path, "/seen");
  EXPECT_EQ(seen[0].status, 200);
  EXPECT_EQ(seen[1].status, 411);
}

TEST_F(HttpServerTest, StopClosesIdleConnectionsAndServeReturns) {
  start();
  Client idle(port_);
  idle.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(idle.read_some(20).rfind("HTTP/1.1 200", 0), 0U);  // kept alive, now idle
  server_->stop();
  EXPECT_EQ(serving_.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(idle.closed_by_server());
  Client late(port_);
  EXPECT_FALSE(late.connected() && !late.closed_by_server()) << "a new connection was served after stop()";
}

TEST_F(HttpServerTest, StopLetsARequestInFlightFinishThenCloses) {
  start();
  Client client(port_);
  client.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");  // keep-alive requested
  wait_for_slow_handler();
  server_->stop();
  EXPECT_EQ(serving_.wait_for(200ms), std::future_status::timeout) << "serve() returned with a request in flight";
  release_handler();
  const std::string answer = client.read_all();  // the answer, then the close
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0U) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  EXPECT_EQ(serving_.wait_for(5s), std::future_status::ready);
}

TEST_F(HttpServerTest, ClosesConnectionsIdlePastTheTimeout) {
  HttpServerOptions options;
  options.idle_timeout = 300ms;
  start(options);
  Client client(port_);
  client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(client.read_some(20).rfind("HTTP/1.1 200", 0), 0U);
  const auto answered = Clock::now();
  const auto closed_after = time_until_closed(client, answered, 3000ms);
  ASSERT_TRUE(closed_after);
  EXPECT_GE(closed_after->count(), 290);  // not before the idle timeout
}

TEST_F(HttpServerTest, ClosesConnectionsPastTheLimit) {
  HttpServerOptions options;
  options.max_connections = 1;
  start(options);
  Client first(port_);
  first.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(first.read_some(20).rfind("HTTP/1.1 200", 0), 0U);
  Client second(port_);
  EXPECT_TRUE(second.closed_by_server());
  first.send("GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(first.read_all().find("GET /b"), std::string::npos);
}

TEST(HttpServer, BindRefusesAnAddressInUseWithAClearError) {
  auto make = [] {
    return std::make_unique<HttpServer>(
        HttpServerOptions{}, [](const HttpRequest&, HttpResponse&) {},
        [](int, std::string_view, std::string_view, std::string_view, std::string_view, std::string_view) {
          return HttpResponse{};
        },
        nullptr);
  };
  auto first = make();
  const int port = first->bind("127.0.0.1", 0);
  auto second = make();
  try {
    second->bind("127.0.0.1", port);
    FAIL() << "bound a port in use";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(port)), std::string::npos) << e.what();
  }
}

TEST_F(HttpServerTest, TheHeadCheckRefusesBeforeAnyBodyByteIsRead) {
  start({}, [](const HttpRequest& head) -> std::optional<HttpResponse> {
    if (head.path != "/private" || head.header("X-Key") == "open sesame") return std::nullopt;
    HttpResponse refused;
    refused.status = 401;
    refused.body = "no key for " + head.method + " " + head.path;
    return refused;
  });
  Client client(port_);
  // The head announces a body that never comes: the answer must not wait for it.
  client.send("POST /private?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
  const std::string answer = client.read_all();
  EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0U) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  EXPECT_NE(answer.find("no key for POST /private"), std::string::npos) << answer;  // the check saw the decoded path
  EXPECT_EQ(handled(), 0);

  Client allowed(port_);
  allowed.send(
      "POST /private HTTP/1.1\r\nHost: x\r\nX-Key: open sesame\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_NE(allowed.read_all().find("POST /private body=ok"), std::string::npos);
  const auto seen = observed();
  ASSERT_EQ(seen.size(), 2U);
  EXPECT_EQ(seen[0].status, 401);  // the observer sees refusals on the head too
}

TEST_F(HttpServerTest, BodiesBeyondTheBudgetAre503WithRetryAfterUntilMemoryIsReleased) {
  HttpServerOptions options;
  options.max_body_bytes = 100;
  options.max_body_memory_bytes = 150;
  start(options);
  const std::string head = "POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ";
  Client first(port_);
  first.send(head + "100\r\n\r\n");
  ASSERT_EQ(first.read_some(25), "HTTP/1.1 100 Continue\r\n\r\n");  // 100 of 150 bytes reserved
  {
    Client over(port_);
    over.send(head + "51\r\n\r\n");
    const std::string answer = over.read_all();
    EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0U) << answer;
    EXPECT_NE(answer.find("Retry-After: 1\r\n"), std::string::npos) << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
    EXPECT_NE(answer.find("overloaded (body)"), std::string::npos) << answer;
  }
  {
    Client within(port_);  // 100 + 50 fits
    within.send("POST /y HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 50\r\n\r\n" +
                std::string(50, 'b'));
    EXPECT_EQ(within.read_all().rfind("HTTP/1.1 200", 0), 0U);
  }
  first.send(std::string(100, 'a'));
  EXPECT_EQ(first.read_some(12).rfind("HTTP/1.1 200", 0), 0U);
  // Answered: its 100 bytes are released, so 100 more fit again.
  Client again(port_);
  again.send("POST /z HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'c'));
  EXPECT_EQ(again.read_all().rfind("HTTP/1.1 200", 0), 0U);
}

TEST_F(HttpServerTest, AClosedConnectionReleasesItsBodyReservation) {
  HttpServerOptions options;
  options.max_body_bytes = 100;
  options.max_body_memory_bytes = 100;
  start(options);
  {
    Client gone(port_);
    gone.send("POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n");
    ASSERT_EQ(gone.read_some(25), "HTTP/1.1 100 Continue\r\n\r\n");
  }  // closed with its body unsent
  // The server notices the close at once; a bounded number of tries covers the race.
  bool fitted = false;
  for (int attempt = 0; attempt < 100 && !fitted; ++attempt) {
    Client next(port_);
    next.send("POST /y HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n" +
              std::string(100, 'a'));
    fitted = next.read_all().rfind("HTTP/1.1 200", 0) == 0;
    if (!fitted) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(fitted);
}

TEST_F(HttpServerTest, HeadTimeoutRunsFromTheAcceptAndTricklingDoesNotExtendIt) {
  HttpServerOptions options;
  options.head_timeout = 300ms;
  start(options);
  const auto connected = Clock::now();
  Client client(port_);
  ASSERT_TRUE(client.connected());
  const std::string head = "GET /slowly HTTP/1.1\r\nHost: x\r\nX-Filler: " + std::string(200, 'f');
  std::optional<std::chrono::milliseconds> closed_after;
  for (std::size_t i = 0; i < head.size() && !closed_after; ++i) {  // a byte every 20 ms: 4.4 s in all
    client.send(head.substr(i, 1));
    std::this_thread::sleep_for(20ms);
    if (client.closed_now())
      closed_after = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - connected);
  }
  ASSERT_TRUE(closed_after) << "a trickled head kept the connection open past the head timeout";
  EXPECT_GE(closed_after->count(), 290);
  EXPECT_LT(closed_after->count(), 2000);
  EXPECT_EQ(handled(), 0);
}

TEST_F(HttpServerTest, HeadTimeoutOfALaterRequestRunsFromItsFirstByte) {
  HttpServerOptions options;
  options.head_timeout = 300ms;
  options.idle_timeout = 5000ms;
  start(options);
  Client client(port_);
  client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(client.read_some(20).rfind("HTTP/1.1 200", 0), 0U);
  std::this_thread::sleep_for(500ms);  // idle, longer than the head timeout: still open
  EXPECT_FALSE(client.closed_now());
  const auto first_byte = Clock::now();
  client.send("GET /b HTTP/1.1\r\n");  // begun, never finished
  const auto closed_after = time_until_closed(client, first_byte, 3000ms);
  ASSERT_TRUE(closed_after);
  EXPECT_GE(closed_after->count(), 290);
}

TEST_F(HttpServerTest, BodyTimeoutClosesAConnectionWhoseBodyStalls) {
  HttpServerOptions options;
  options.body_timeout = 300ms;
  start(options);
  Client client(port_);
  const auto head_sent = Clock::now();
  client.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a part");
  const auto closed_after = time_until_closed(client, head_sent, 3000ms);
  ASSERT_TRUE(closed_after) << "a stalled body kept the connection open";
  EXPECT_GE(closed_after->count(), 290);
  EXPECT_EQ(handled(), 0);
}

TEST_F(HttpServerTest, WriteTimeoutClosesAConnectionWhoseClientDoesNotRead) {
  HttpServerOptions options;
  options.write_timeout = 300ms;
  start(options);
  Client client(port_, 4096);
  client.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  std::this_thread::sleep_for(1500ms);           // not reading: the answer cannot be written
  const std::string answer = client.read_all();  // what the kernel buffered, then the close
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0U) << answer.substr(0, 100);
  EXPECT_LT(answer.size(), 64U * 1024 * 1024) << "the whole answer was taken: the write did not stall";
}

TEST_F(HttpServerTest, StopClosesConnectionsWhoseHeadHasNotArrivedInFull) {
  start();
  Client silent(port_);
  Client partial(port_);
  partial.send("GET /never HTTP/1.1\r\nHost: x\r\n");
  std::this_thread::sleep_for(100ms);  // both accepted and waiting
  server_->stop();
  // Nothing is in flight: serve() returns long before the 10 s head timeout.
  EXPECT_EQ(serving_.wait_for(3s), std::future_status::ready);
  EXPECT_TRUE(silent.closed_by_server());
  EXPECT_TRUE(partial.closed_by_server());
  EXPECT_EQ(handled(), 0);
}

TEST_F(HttpServerTest, StopAnswersARequestWhoseHeadArrivedAndClosesItsConnection) {
  start();
  Client client(port_);
  client.send("POST /late HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  ASSERT_EQ(client.read_some(25), "HTTP/1.1 100 Continue\r\n\r\n");  // the head has arrived: in flight
  server_->stop();
  EXPECT_EQ(serving_.wait_for(300ms), std::future_status::timeout) << "serve() returned with a request in flight";
  client.send("body");
  const std::string answer = client.read_all();
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0U) << answer;
  EXPECT_NE(answer.find("POST /late body=body"), std::string::npos) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  EXPECT_EQ(serving_.wait_for(5s), std::future_status::ready);
}

}  // namespace
}  // namespace gpucluster::agent
