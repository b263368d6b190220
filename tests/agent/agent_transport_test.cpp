// The agent's connection handling, on the real `gpucluster agent` binary:
// accept errors when descriptors run out, the open-files limit,
// the head/body/idle timeouts and their defaults, the body budget and the
// memory hostile connections can pin, the token checked on the head, draining
// (SIGTERM, /healthz), and a log reader that goes away.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "gpucluster/agent/server.hpp"
#include "gpucluster/node/manager.hpp"
#include "support/agent_process.hpp"
#include "support/loopback_connection.hpp"

namespace gpucluster::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

std::string home_fleet() {
  return source_path("examples/fleet-home.json");
}

using Connection = gpucluster::testing::LoopbackConnection;

// Polls every 10 ms, at most `patience`: the time from `since` until the
// server closed the connection, or nullopt when it stayed open.
std::optional<std::chrono::milliseconds> time_until_closed(const Connection& connection, Clock::time_point since,
                                                           std::chrono::milliseconds patience) {
  const auto deadline = Clock::now() + patience;
  while (Clock::now() < deadline) {
    if (connection.closed_now()) return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since);
    std::this_thread::sleep_for(10ms);
  }
  return std::nullopt;
}

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

// User + system CPU time of a process, from /proc/PID/stat (fields 14 and 15).
std::chrono::milliseconds cpu_time(pid_t pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
  std::string field;
  long long ticks = 0;
  for (int index = 3; index <= 15 && fields >> field; ++index) {
    if (index >= 14) ticks += std::stoll(field);
  }
  return std::chrono::milliseconds(ticks * 1000 / ::sysconf(_SC_CLK_TCK));
}

// Resident memory of a process in KiB (VmRSS of /proc/PID/status).
long long rss_kib(pid_t pid) {
  std::istringstream status(read_text("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

// The value of an unlabelled series in a /metrics answer, or nullopt.
std::optional<double> metric_value(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return std::nullopt;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// ---------------------------------------------------------------------------
// Item 8: descriptors run out.

TEST(AgentAcceptErrors, BackOffAreCountedAndLoggedRateLimitedWhenDescriptorsRunOut) {
  // 40 descriptors (soft = hard, so the agent cannot raise it): about 25 connections fit.
  AgentLaunch launch;
  launch.open_files_limit = std::pair<rlim_t, rlim_t>{40, 40};
  AgentProcess agent({"--fleet", home_fleet(), "--threads", "1", "--interval", "1s"}, 30s, launch);
  {
    // One connection closed by the client first. Under UBSan (the asan preset)
    // the agent's first EOF makes UBSan check a vptr it has not seen (Asio's
    // misc error category), and UBSan probes that memory through a pipe: with
    // no descriptor free the probe fails and reads as "invalid vptr". Seen
    // once while descriptors are free, the check is cached. (No effect on a
    // build without UBSan.)
    Connection first(agent.port());
    first.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    ASSERT_EQ(first.read_some(12).rfind("HTTP/1.1 200", 0), 0U);
  }
  std::vector<std::unique_ptr<Connection>> connections;
  for (int i = 0; i < 60; ++i)
    connections.push_back(std::make_unique<Connection>(agent.port()));  // the backlog takes them
  for (const auto& connection : connections) ASSERT_TRUE(connection->connected());
  std::this_thread::sleep_for(300ms);  // the first failures, and the back-off ramps up

  // No busy loop: over 2 s the agent uses little CPU (a spinning accept takes a core).
  const auto cpu_before = cpu_time(agent.pid());
  std::this_thread::sleep_for(2s);
  const auto cpu_used = cpu_time(agent.pid()) - cpu_before;
  EXPECT_LT(cpu_used.count(), 500) << "CPU time over 2 s while accept fails";
  const std::string log = agent.stderr_text();
  EXPECT_LT(log.size(), 16U * 1024) << "the log grew while accept failed:\n" << log.substr(0, 2000);
  EXPECT_GE(count(log, "accept failed"), 1U) << log;
  EXPECT_LE(count(log, "accept failed"), 2U) << log;  // at most one line per 10 s
  EXPECT_NE(log.find("open-files limit: 40 (the hard limit); it is below the 1024 connections"), std::string::npos)
      << log;

  // Descriptors come back: the agent answers again and has counted the failures.
  connections.clear();
  auto client = agent.client();
  const auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics) << "the agent does not answer once descriptors are free again ("
                       << httplib::to_string(metrics.error()) << "); running: " << agent.running() << "\n"
                       << agent.stderr_text();
  ASSERT_EQ(metrics->status, 200);
  const auto errors = metric_value(metrics->body, "gpucluster_http_accept_errors_total");
  ASSERT_TRUE(errors) << "no gpucluster_http_accept_errors_total in /metrics";
  EXPECT_GT(*errors, 0.0);
  EXPECT_TRUE(agent.running());
  const int status = agent.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << agent.stderr_text();
}

// Past the 1,024-connection limit, connections are closed at once; a flood of
// them logs one line per 10 s, not one each.
TEST(AgentAcceptErrors, ConnectionsPastTheLimitAreClosedAndLoggedRateLimited) {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 4096);
  ::setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 1024 + 200)
    GTEST_SKIP() << "this test needs 1,224 descriptors; the hard limit is " << limit.rlim_max;
  AgentProcess agent({"--fleet", home_fleet(), "--threads", "1"});
  std::vector<std::unique_ptr<Connection>> connections;
  for (int i = 0; i < 1024 + 100; ++i) connections.push_back(std::make_unique<Connection>(agent.port()));
  // The last 100 are closed by the agent (bounded wait: 5 s for the last one).
  const auto last_closed = time_until_closed(*connections.back(), Clock::now(), 5000ms);
  EXPECT_TRUE(last_closed) << "a connection past the limit stayed open";
  int closed = 0;
  for (const auto& connection : connections) closed += connection->closed_now() ? 1 : 0;
  EXPECT_EQ(closed, 100);
  const std::string log = agent.stderr_text();
  EXPECT_EQ(count(log, "refused a connection"), 1U) << log.substr(0, 4000);
  connections.clear();
  // Served again once the agent has seen those closes (bounded: 100 tries, 5 s).
  auto client = agent.client();
  bool answered = false;
  for (int attempt = 0; attempt < 100 && !answered; ++attempt) {
    const auto healthz = client.Get("/healthz");
    answered = healthz && healthz->status == 200;
    if (!answered) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(answered);
}

TEST(AgentOpenFiles, TheSoftLimitIsRaisedToTheHardLimitAtStartAndLogged) {
  AgentLaunch launch;
  launch.open_files_limit = std::pair<rlim_t, rlim_t>{256, 2048};
  AgentProcess agent({"--fleet", home_fleet()}, 30s, launch);
  const std::string limits = read_text("/proc/" + std::to_string(agent.pid()) + "/limits");
  std::istringstream lines(limits);
  std::string open_files;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("Max open files", 0) == 0) open_files = line;
  }
  std::istringstream fields(open_files.substr(std::string("Max open files").size()));
  std::string soft, hard;
  fields >> soft >> hard;
  EXPECT_EQ(soft, "2048") << open_files;
  EXPECT_EQ(hard, "2048") << open_files;
  EXPECT_NE(agent.stderr_text().find("open-files limit raised from 256 to 2048"), std::string::npos)
      << agent.stderr_text();
}

// ---------------------------------------------------------------------------
// Item 12: the log's reader goes away.

TEST(AgentLogPipe, SurvivesItsStderrReaderGoingAway) {
  AgentLaunch launch;
  launch.stderr_to_pipe = true;
  AgentProcess agent({"--fleet", home_fleet(), "--log-level", "debug"}, 30s, launch);
  agent.close_stderr_pipe();  // every log line from now on meets EPIPE
  auto client = agent.client();
  for (int i = 0; i < 20; ++i) {  // each request logs a debug line
    const auto result = client.Get("/healthz");
    ASSERT_TRUE(result) << "request " << i << ": the agent stopped answering";
    EXPECT_EQ(result->status, 200);
  }
  EXPECT_TRUE(agent.running());
  const int status = agent.stop(SIGTERM);  // logs while draining too
  EXPECT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// ---------------------------------------------------------------------------
// Item 10: timeouts.

TEST(AgentTimeouts, HeadBodyAndIdleTimeoutsCloseConnections) {
  AgentProcess agent(
      {"--fleet", home_fleet(), "--head-timeout", "300ms", "--body-timeout", "400ms", "--idle-timeout", "500ms"});
  const auto within = [](std::optional<std::chrono::milliseconds> took, long long at_least_ms) {
    return took && took->count() >= at_least_ms && took->count() < 3000;
  };
  {  // connected, nothing sent: the head timeout runs from the accept
    const auto started = Clock::now();
    Connection silent(agent.port());
    const auto took = time_until_closed(silent, started, 4000ms);
    EXPECT_TRUE(within(took, 290)) << (took ? took->count() : -1) << " ms";
  }
  {  // a head trickled a byte every 50 ms does not extend it
    const auto started = Clock::now();
    Connection trickle(agent.port());
    const std::string head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(40, 's');
    std::optional<std::chrono::milliseconds> took;
    for (std::size_t i = 0; i < head.size() && !took; ++i) {
      trickle.send(head.substr(i, 1));
      std::this_thread::sleep_for(50ms);
      if (trickle.closed_now()) took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    }
    EXPECT_TRUE(within(took, 290)) << (took ? took->count() : -1) << " ms";
  }
  {  // a body that stops coming
    Connection stalled(agent.port());
    const auto started = Clock::now();
    stalled.send("POST /v1/select HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"min_");
    const auto took = time_until_closed(stalled, started, 4000ms);
    EXPECT_TRUE(within(took, 390)) << (took ? took->count() : -1) << " ms";
  }
  {  // keep-alive, no next request
    Connection idle(agent.port());
    idle.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    const std::string answer = idle.read_some(12);
    const auto answered = Clock::now();
    ASSERT_EQ(answer.rfind("HTTP/1.1 200", 0), 0U) << answer;
    std::string rest = idle.read_some(1);  // the rest of the answer (one write: already here)
    const auto took = time_until_closed(idle, answered, 4000ms);
    EXPECT_TRUE(within(took, 490)) << (took ? took->count() : -1) << " ms";
  }
  EXPECT_TRUE(agent.running());
}

// A client that does not take its answer: /metrics of 6,000 devices (about
// 5 MB) is more than the socket buffers hold, so the write stalls.
TEST(AgentTimeouts, WriteTimeoutClosesAConnectionWhoseClientDoesNotRead) {
  const auto fleet_path =
      std::filesystem::temp_directory_path() / ("gpucluster-big-fleet-" + std::to_string(::getpid()) + ".json");
  {
    json fleet = json::parse(read_text(home_fleet()));
    const json model = fleet["devices"][0];
    fleet["devices"] = json::array();
    for (int i = 0; i < 6000; ++i) {
      json device = model;
      device["device_id"] = "cuda:" + std::to_string(i);
      device.erase("uuid");
      device.erase("pci_bus_id");
      fleet["devices"].push_back(std::move(device));
    }
    std::ofstream(fleet_path) << fleet.dump();
  }
  AgentProcess agent({"--fleet", fleet_path.string(), "--write-timeout", "300ms"});
  Connection reader(agent.port(), 4096);
  reader.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  std::this_thread::sleep_for(1500ms);           // not reading: the answer cannot be written in time
  const std::string answer = reader.read_all();  // what the kernel buffered, then the close
  ASSERT_EQ(answer.rfind("HTTP/1.1 200", 0), 0U) << answer.substr(0, 200);
  const std::size_t length_at = answer.find("Content-Length: ");
  ASSERT_NE(length_at, std::string::npos);
  const std::size_t length = std::stoul(answer.substr(length_at + 16));
  EXPECT_GT(length, 4'500'000U);  // more than the largest send buffer (tcp_wmem: 4 MiB)
  EXPECT_LT(answer.size() - answer.find("\r\n\r\n") - 4, length) << "the whole answer arrived: the write did not stall";
  EXPECT_TRUE(agent.running());
  std::filesystem::remove(fleet_path);
}

// The default the documentation promises (10 s), not a configured one.
TEST(AgentTimeouts, AStalledHeadIsClosedAfterTheDefaultTenSeconds) {
  AgentProcess agent({"--fleet", home_fleet()});
  const auto started = Clock::now();
  Connection stalled(agent.port());
  stalled.send("GET /v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  const auto took = time_until_closed(stalled, started, 13000ms);
  ASSERT_TRUE(took) << "still open after 13 s";
  EXPECT_GE(took->count(), 9900);
  EXPECT_LT(took->count(), 11500);  // the sweep checks once a second
}

TEST(AgentTimeouts, TimeoutOptionsAreValidated) {
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{{"--head-timeout", "0s"},
                                                                                      {"--body-timeout", "-1s"},
                                                                                      {"--idle-timeout", "soon"},
                                                                                      {"--write-timeout", "0"},
                                                                                      {"--idle-timeout", "25h"},
                                                                                      {"--drain-timeout", "500us"},
                                                                                      {"--max-body-memory", "1KiB"},
                                                                                      {"--max-body-memory", "lots"}}) {
    try {
      AgentProcess agent({"--fleet", home_fleet(), option, value}, 10s);
      ADD_FAILURE() << option << " " << value << " was accepted";
    } catch (const std::runtime_error& e) {
      // The agent exits 2 with a one-line error naming the option and the value.
      const std::string message = e.what();
      EXPECT_NE(message.find(option), std::string::npos) << message;
      EXPECT_NE(message.find(value), std::string::npos) << message;
    }
  }
}

// ---------------------------------------------------------------------------
// Items 9 and 10: draining; /healthz while draining.

TEST(AgentDrain, SigtermDoesNotWaitForConnectionsWithoutARequestInFlight) {
  AgentProcess agent({"--fleet", home_fleet()});  // default timeouts: head 10 s, idle 60 s; drain 10 s
  Connection silent(agent.port());
  Connection partial(agent.port());
  partial.send("GET /v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  Connection kept_alive(agent.port());
  kept_alive.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  ASSERT_EQ(kept_alive.read_some(12).rfind("HTTP/1.1 200", 0), 0U);
  std::this_thread::sleep_for(100ms);
  const auto signalled = Clock::now();
  const int status = agent.stop(SIGTERM);
  const auto took = Clock::now() - signalled;
  ASSERT_TRUE(WIFEXITED(status)) << agent.stderr_text();
  EXPECT_EQ(WEXITSTATUS(status), 0) << agent.stderr_text();
  EXPECT_LT(took, 3s) << "SIGTERM waited for connections that had no request in flight";
  EXPECT_EQ(agent.stderr_text().find("did not finish"), std::string::npos) << agent.stderr_text();
}

TEST(AgentDrain, ARequestWhoseHeadArrivedBeforeSigtermIsAnsweredNormally) {
  AgentProcess agent({"--fleet", home_fleet()});
  Connection connection(agent.port());
  const std::string body = R"({"min_memory_bytes": 0})";
  connection.send("POST /v1/select HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n");
  // 100 Continue: the agent has the head, so the request is in flight.
  ASSERT_EQ(connection.read_some(25), "HTTP/1.1 100 Continue\r\n\r\n");
  std::promise<int> exit_status;
  auto exited = exit_status.get_future();
  std::thread stopper([&] { exit_status.set_value(agent.stop(SIGTERM)); });
  // The drain has begun once the listening socket is closed (bounded: 5 s).
  bool refused = false;
  for (int attempt = 0; attempt < 250 && !refused; ++attempt) {
    Connection probe(agent.port());
    refused = !probe.connected() && probe.connect_errno() == ECONNREFUSED;
    if (!refused) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(refused) << "the agent kept accepting after SIGTERM";
  connection.send(body);
  const std::string answer = connection.read_all();
  stopper.join();
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0U) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  EXPECT_NE(answer.find("\"device\""), std::string::npos) << answer;
  const int status = exited.get();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << agent.stderr_text();
}

// In process: refuse_new_requests() is what SIGTERM starts with; a request
// whose head arrives after it is refused, except /healthz, which says 503.
TEST(AgentDrain, HealthzAnswers503DrainingWhileOtherRoutesAre409) {
  Manager manager;
  manager.start(/*background_sampling=*/false);
  agent::AgentConfig config;
  config.listen.port = 0;
  config.worker_threads = 1;
  agent::Agent agent(manager, config);
  const int port = agent.bind();
  std::thread serving([&] { agent.serve(); });
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(std::chrono::seconds{10});
  const auto running = client.Get("/healthz");
  ASSERT_TRUE(running);
  EXPECT_EQ(running->status, 200);

  agent.refuse_new_requests();
  const auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503) << health->body;
  const json body = json::parse(health->body);
  EXPECT_EQ(body["status"], "unavailable");
  EXPECT_EQ(body["state"], "draining");
  const auto devices = client.Get("/v1/devices");
  ASSERT_TRUE(devices);
  EXPECT_EQ(devices->status, 409);
  EXPECT_EQ(json::parse(devices->body)["error"]["code"], "shutting_down");

  EXPECT_TRUE(agent.stop());
  serving.join();
  manager.shutdown();
}

// ---------------------------------------------------------------------------
// Item 9: the body budget; the token on the head; memory pinned.

TEST(AgentBodyBudget, BodiesBeyondTheDefaultBudgetAre503WithRetryAfterBeforeBeingRead) {
  AgentProcess agent({"--fleet", home_fleet(), "--threads", "1"});
  const std::string head =
      "POST /v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 1048576\r\n\r\n";
  // 64 bodies of 1 MiB fill the default 64 MiB budget; 100 Continue says each is reserved.
  std::vector<std::unique_ptr<Connection>> holding;
  for (int i = 0; i < 64; ++i) {
    holding.push_back(std::make_unique<Connection>(agent.port()));
    holding.back()->send(head);
    ASSERT_EQ(holding.back()->read_some(25), "HTTP/1.1 100 Continue\r\n\r\n") << "connection " << i;
  }
  {
    Connection over(agent.port());
    over.send(head);
    const std::string answer = over.read_all();
    EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0U) << answer;
    EXPECT_NE(answer.find("Retry-After: 1\r\n"), std::string::npos) << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
    EXPECT_NE(answer.find("\"overloaded\""), std::string::npos) << answer;
  }
  holding.pop_back();  // one gives up: its share comes back
  bool fitted = false;
  for (int attempt = 0; attempt < 100 && !fitted; ++attempt) {
    Connection next(agent.port());
    next.send(head);
    fitted = next.read_some(25) == "HTTP/1.1 100 Continue\r\n\r\n";
    if (!fitted) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(fitted);
  holding.clear();
  auto client = agent.client();
  const auto healthz = client.Get("/healthz");
  ASSERT_TRUE(healthz);
  EXPECT_EQ(healthz->status, 200);
}

// ThreadSanitizer's shadow memory is several times the memory it shadows:
// resident sizes say nothing about the agent's own use in that build.
#if defined(__SANITIZE_THREAD__)
constexpr bool kResidentSizeIsMeaningful = false;
#else
constexpr bool kResidentSizeIsMeaningful = true;
#endif

struct Pinned {
  long long rss_growth_kib = 0;
  int held = 0;     // connections the agent kept reading
  int refused = 0;  // connections the agent answered and closed (or reset: its answer may be lost)
  int answered_503 = 0;
  int answered_401 = 0;
};

// `connections` clients each send a 1 MiB POST's head and all of its body
// but the last byte, and hold the connection: what stays resident in the agent.
Pinned pin_memory(AgentProcess& agent, int connections) {
  auto client = agent.client();
  for (int i = 0; i < 5; ++i) client.Get("/v1/devices");  // warm up
  std::this_thread::sleep_for(200ms);
  const long long before = rss_kib(agent.pid());
  const std::string head = "POST /v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048576\r\n\r\n";
  const std::string almost_all(1048575, ' ');
  std::vector<std::unique_ptr<Connection>> open;
  for (int i = 0; i < connections; ++i) {
    open.push_back(std::make_unique<Connection>(agent.port()));
    if (open.back()->send(head)) open.back()->send(almost_all);  // fails once the agent has refused and closed
  }
  std::this_thread::sleep_for(500ms);  // the agent reads what was sent
  Pinned pinned;
  pinned.rss_growth_kib = rss_kib(agent.pid()) - before;
  for (const auto& connection : open) {
    const std::optional<std::string> answer = connection->answer_now();
    if (!answer) {
      ++pinned.held;
      continue;
    }
    ++pinned.refused;
    pinned.answered_503 += answer->rfind("HTTP/1.1 503", 0) == 0 ? 1 : 0;
    pinned.answered_401 += answer->rfind("HTTP/1.1 401", 0) == 0 ? 1 : 0;
  }
  return pinned;
}

TEST(AgentBodyBudget, MemoryPinnedByHostileConnectionsIsBoundedByTheBudget) {
  AgentProcess agent({"--fleet", home_fleet(), "--threads", "1", "--max-body-memory", "8MiB"});
  const Pinned pinned = pin_memory(agent, 100);
  std::cout << "100 connections, 8 MiB budget: RSS +" << pinned.rss_growth_kib << " KiB; " << pinned.held << " held, "
            << pinned.refused << " refused (" << pinned.answered_503 << " answers 503 read)\n";
  EXPECT_EQ(pinned.held, 8);  // 8 bodies of 1 MiB fill the budget
  EXPECT_EQ(pinned.refused, 92);
  EXPECT_GT(pinned.answered_503, 0);
  if (kResidentSizeIsMeaningful) {
    EXPECT_LT(pinned.rss_growth_kib, 16 * 1024);  // 8 MiB of bodies, plus buffers: far below 100 MiB
  }
  EXPECT_TRUE(agent.running());
}

TEST(AgentSecurity, UnauthenticatedPostsPinNoBodyMemory) {
  const auto token_path =
      std::filesystem::temp_directory_path() / ("gpucluster-pin-token-" + std::to_string(::getpid()));
  {
    std::ofstream token(token_path);
    token << "pin-token\n";
  }
  std::filesystem::permissions(token_path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  AgentProcess agent({"--fleet", home_fleet(), "--threads", "1", "--token-file", token_path.string()});
  const Pinned pinned = pin_memory(agent, 300);  // the issue's 300 connections (316 MB before)
  std::cout << "300 unauthenticated connections: RSS +" << pinned.rss_growth_kib << " KiB; " << pinned.held << " held, "
            << pinned.refused << " refused (" << pinned.answered_401 << " answers 401 read)\n";
  EXPECT_EQ(pinned.held, 0);
  EXPECT_EQ(pinned.refused, 300);
  EXPECT_GT(pinned.answered_401, 0);
  if (kResidentSizeIsMeaningful) {
    EXPECT_LT(pinned.rss_growth_kib, 8 * 1024);  // 0.3 MiB measured; ASan's quarantine keeps freed memory resident
  }
  EXPECT_TRUE(agent.running());
  std::filesystem::remove(token_path);
}

}  // namespace
}  // namespace gpucluster::testing
