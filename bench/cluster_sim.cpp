// cluster_sim: N simulated agents with M devices each report to a real
// coordinator process (POST /v2/report, one kept-alive connection per node,
// one report per interval), while a views thread asks GET /v1/cluster and
// POST /v1/select; it measures the coordinator's CPU and memory from /proc
// over a steady window and the latencies as the nodes and the views see them.
// docs/design/cluster-plan.md "Part 9", docs/benchmarks.md "Cluster".
//
//   cluster_sim --spawn build/release/gpucluster --nodes 1000 --devices 8 --duration 60s
//   cluster_sim --coordinator http://127.0.0.1:9420 --pid 1234 --nodes 100
//
// Prints one JSON line, then a table. Exits 0 when every report and view was
// answered 200, 1 when any failed, 2 on bad arguments or a setup failure.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/uuid/random_generator.hpp>
#include <boost/uuid/uuid_io.hpp>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cluster/http_client.hpp"
#include "gpucluster/model/errors.hpp"
#include "gpucluster/model/time.hpp"
#include "gpucluster/model/units.hpp"
#include "gpucluster/wire/report.hpp"

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using gpucluster::Timestamp;

constexpr std::uint64_t kDeviceMemoryBytes = 85'520'809'984;  // an H100 80GB, as examples/fleet-8x-h100.json
constexpr std::chrono::seconds kRequestTimeout{10};
constexpr std::chrono::seconds kSpawnTimeout{30};

struct Options {
  std::string coordinator_url;
  std::string spawn_path;
  std::vector<std::string> coordinator_args;
  int pid = 0;
  int coordinator_cpu = -1;
  std::size_t nodes = 100;
  std::size_t devices = 8;
  std::chrono::nanoseconds interval = std::chrono::seconds{1};
  std::chrono::nanoseconds duration = std::chrono::seconds{60};
  std::chrono::nanoseconds warmup = std::chrono::seconds{10};
  std::size_t threads = 2;
  double views_rate = 20;
};

Timestamp now_wall() {
  return std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now());
}

// Latencies of one kind, exact (every value kept; a run holds at most a few
// hundred thousand), so the percentiles are not bucket bounds.
struct Latencies {
  std::vector<double> ms;
  void add(SteadyClock::duration took) { ms.push_back(std::chrono::duration<double, std::milli>(took).count()); }
  void merge(const Latencies& other) { ms.insert(ms.end(), other.ms.begin(), other.ms.end()); }
  // Nearest rank; nullopt without values.
  std::optional<double> percentile(double p) {
    if (ms.empty()) return std::nullopt;
    std::sort(ms.begin(), ms.end());
    const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(ms.size())));
    return ms[std::clamp<std::size_t>(rank, 1, ms.size()) - 1];
  }
  nlohmann::json summary() {
    const auto value = [](std::optional<double> v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
    return {{"count", ms.size()},
            {"p50_ms", value(percentile(50))},
            {"p99_ms", value(percentile(99))},
            {"max_ms", value(percentile(100))}};
  }
};

// What the nodes of one event loop counted; only that loop's thread writes it.
struct NodeStats {
  Latencies latency;             // reports started in the steady window and answered 200
  std::uint64_t sent = 0;        // reports started in the steady window
  std::uint64_t ok = 0;          // … answered 200 with a valid ack
  std::uint64_t sent_total = 0;  // the whole run, warm-up included
  std::uint64_t ok_total = 0;
  std::map<int, std::uint64_t> by_status;  // non-200 answers, the whole run
  std::uint64_t transport_errors = 0;      // reset, EOF, timeout on an open connection
  std::uint64_t connect_errors = 0;
  std::uint64_t bad_acks = 0;            // 200 whose body parse_report_ack refused
  std::uint64_t rejected_samples = 0;    // the acks' "rejected"
  std::uint64_t inventory_requests = 0;  // acks with inventory_required after the first
  std::uint64_t late_ticks = 0;          // ticks that found the previous report still in flight

  void merge(const NodeStats& other) {
    latency.merge(other.latency);
    sent += other.sent;
    ok += other.ok;
    sent_total += other.sent_total;
    ok_total += other.ok_total;
    for (const auto& [status, count] : other.by_status) by_status[status] += count;
    transport_errors += other.transport_errors;
    connect_errors += other.connect_errors;
    bad_acks += other.bad_acks;
    rejected_samples += other.rejected_samples;
    inventory_requests += other.inventory_requests;
    late_ticks += other.late_ticks;
  }
  std::uint64_t failed() const {
    std::uint64_t n = transport_errors + connect_errors + bad_acks;
    for (const auto& [status, count] : by_status) n += count;
    return n;
  }
};

// The steady window, shared read-only by every loop once set.
struct Window {
  SteadyClock::time_point begin;
  SteadyClock::time_point end;
  bool contains(SteadyClock::time_point t) const { return t >= begin && t < end; }
};

// A quantity that wanders within [low, high] by at most ±step per sample.
struct Walk {
  double value, low, high, step;
  double next(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> delta(-step, step);
    value = std::clamp(value + delta(rng), low, high);
    return value;
  }
};

struct DeviceWalk {
  Walk memory_used_bytes, utilization_percent, power_watts, temperature_celsius;
};

// One simulated agent: its identity, its devices' random walks, one kept-alive
// connection and a timer. Lives on one event loop; every handler runs there.
class SimNode {
 public:
  SimNode(net::io_context& context, const tcp::endpoint& endpoint, std::string host_header, std::size_t index,
          const Options& options, const Window& window, NodeStats& stats)
      : socket_(context),
        timer_(context),
        endpoint_(endpoint),
        host_header_(std::move(host_header)),
        options_(options),
        window_(window),
        stats_(stats),
        rng_(0x5eed'0000ULL + index) {
    report_.node.id = boost::uuids::to_string(boost::uuids::random_generator()());
    report_.node.incarnation = 1;
    report_.node.name = fmt::format("sim-{:05}", index);
    report_.node.agent_version = "cluster_sim";
    report_.interval_ms =
        static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::milliseconds>(options.interval).count());
    report_.inventory_version = 1;
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (std::size_t d = 0; d < options.devices; ++d) {
      gpucluster::DeviceInfo info;
      info.key.local_id = fmt::format("cuda:{}", d);
      info.name = "NVIDIA H100 80GB HBM3";
      info.vendor = "NVIDIA";
      info.kind = gpucluster::DeviceKind::cuda;
      info.backend = "simulated";
      info.uuid = fmt::format("GPU-{}-{}", report_.node.id, d);  // distinct across nodes
      info.memory_total_bytes = kDeviceMemoryBytes;
      info.compute_capability = "9.0";
      info.power_limit_watts = 700.0;
      inventory_.push_back(std::move(info));
      const double memory = static_cast<double>(kDeviceMemoryBytes);
      walks_.push_back(DeviceWalk{{unit(rng_) * memory, 0.0, memory, memory / 50.0},
                                  {unit(rng_) * 100.0, 0.0, 100.0, 5.0},
                                  {100.0 + unit(rng_) * 500.0, 60.0, 700.0, 20.0},
                                  {35.0 + unit(rng_) * 40.0, 25.0, 90.0, 1.0}});
    }
  }

  // First tick at `first`, then one every interval on a fixed schedule.
  void start(SteadyClock::time_point first) {
    next_tick_ = first;
    arm();
  }

 private:
  void arm() {
    timer_.expires_at(next_tick_);
    timer_.async_wait([this](beast::error_code ec) {
      if (ec) return;
      tick();
      next_tick_ += std::chrono::duration_cast<SteadyClock::duration>(options_.interval);
      arm();
    });
  }

  // One new sample per device; sent now, or when the report in flight is answered.
  void tick() {
    const Timestamp at = now_wall();
    for (std::size_t d = 0; d < walks_.size(); ++d) {
      DeviceWalk& walk = walks_[d];
      gpucluster::Sample sample;
      sample.timestamp = at;
      sample.memory_total_bytes = static_cast<std::int64_t>(kDeviceMemoryBytes);
      sample.memory_used_bytes = static_cast<std::int64_t>(walk.memory_used_bytes.next(rng_));
      sample.utilization_percent = static_cast<float>(walk.utilization_percent.next(rng_));
      sample.power_watts = static_cast<float>(walk.power_watts.next(rng_));
      sample.temperature_celsius = static_cast<float>(walk.temperature_celsius.next(rng_));
      pending_[inventory_[d].key.local_id].push_back(sample);
    }
    if (in_flight_) {
      ++stats_.late_ticks;
      return;
    }
    send();
  }

  void send() {
    in_flight_ = true;
    if (!socket_.is_open()) {
      socket_.async_connect(endpoint_, [this](beast::error_code ec) {
        if (ec) {
          ++stats_.connect_errors;
          return fail();
        }
        socket_.set_option(tcp::no_delay(true));
        write();
      });
      return;
    }
    write();
  }

  void write() {
    report_.seq = ++seq_;
    report_.sent_at = now_wall();
    report_.clock = last_exchange_;
    if (send_inventory_) {
      report_.inventory = inventory_;
    } else {
      report_.inventory.reset();
    }
    report_.samples = std::move(pending_);
    pending_.clear();
    request_ = {};
    request_.method(http::verb::post);
    request_.target("/v2/report");
    request_.version(11);
    request_.set(http::field::host, host_header_);
    request_.set(http::field::content_type, "application/json");
    request_.keep_alive(true);
    request_.body() = gpucluster::agent::encode_report(report_);
    request_.prepare_payload();
    started_ = SteadyClock::now();
    t0_ = report_.sent_at;
    counted_ = window_.contains(started_);
    ++stats_.sent_total;
    if (counted_) ++stats_.sent;
    // A deadline over the exchange: a coordinator that stops answering shows as a transport error.
    deadline_armed_ = true;
    timeout_.expires_after(kRequestTimeout);
    timeout_.async_wait([this](beast::error_code ec) {
      if (!ec && deadline_armed_) socket_.close();
    });
    http::async_write(socket_, request_, [this](beast::error_code ec, std::size_t) {
      if (ec) {
        ++stats_.transport_errors;
        return fail();
      }
      response_ = {};
      http::async_read(socket_, buffer_, response_, [this](beast::error_code read_ec, std::size_t) {
        deadline_armed_ = false;
        timeout_.cancel();
        if (read_ec) {
          ++stats_.transport_errors;
          return fail();
        }
        answered();
      });
    });
  }

  void answered() {
    const Timestamp t1 = now_wall();
    const int status = static_cast<int>(response_.result_int());
    if (status != 200) {
      ++stats_.by_status[status];
      if (!response_.keep_alive()) close();
      return done();
    }
    gpucluster::agent::ReportAck ack;
    try {
      ack = gpucluster::agent::parse_report_ack(response_.body());
    } catch (const gpucluster::Error&) {
      ++stats_.bad_acks;
      return done();
    }
    if (ack.ack != report_.seq) {
      ++stats_.bad_acks;
      return done();
    }
    ++stats_.ok_total;
    if (counted_) {
      ++stats_.ok;
      stats_.latency.add(SteadyClock::now() - started_);
    }
    stats_.rejected_samples += ack.rejected;
    if (ack.inventory_required && !send_inventory_) ++stats_.inventory_requests;
    send_inventory_ = ack.inventory_required;
    last_exchange_ = gpucluster::agent::ClockExchange{t0_, ack.received_at, ack.replied_at, t1};
    if (!response_.keep_alive()) close();
    done();
  }

  // The samples of a failed report are lost (the real agent's outbox would
  // keep them); the next tick reconnects and sends its own.
  void fail() {
    deadline_armed_ = false;
    timeout_.cancel();
    close();
    send_inventory_ = true;  // a new connection may meet a restarted coordinator
    done();
  }

  void close() {
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    buffer_.clear();
  }

  void done() {
    in_flight_ = false;
    // Ticks that came while this report was in flight: send their samples now.
    if (!pending_.empty() && socket_.is_open()) send();
  }

  tcp::socket socket_;
  net::steady_timer timer_;
  net::steady_timer timeout_{socket_.get_executor()};
  tcp::endpoint endpoint_;
  std::string host_header_;
  const Options& options_;
  const Window& window_;
  NodeStats& stats_;
  std::mt19937_64 rng_;
  gpucluster::agent::Report report_;
  std::vector<gpucluster::DeviceInfo> inventory_;
  std::vector<DeviceWalk> walks_;
  std::map<std::string, std::vector<gpucluster::Sample>> pending_;
  std::optional<gpucluster::agent::ClockExchange> last_exchange_;
  std::uint64_t seq_ = 0;
  bool send_inventory_ = true;
  bool in_flight_ = false;
  bool counted_ = false;
  bool deadline_armed_ = false;
  SteadyClock::time_point next_tick_;
  SteadyClock::time_point started_;
  Timestamp t0_{};
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

// ---- the coordinator process ----

struct ProcTimes {
  double cpu_seconds = 0;  // utime + stime
};

std::optional<ProcTimes> read_proc_times(int pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name may hold spaces and parentheses: fields start after the last ')'.
  const std::size_t close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(close + 2));
  std::vector<std::string> values;
  for (std::string value; fields >> value;) values.push_back(value);
  // After the name: state is field 3, utime 14, stime 15 (proc(5)); index = field - 3.
  if (values.size() < 13) return std::nullopt;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return ProcTimes{(std::stod(values[11]) + std::stod(values[12])) / ticks};
}

// VmRSS and VmHWM in bytes.
std::optional<std::pair<std::uint64_t, std::uint64_t>> read_proc_memory(int pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::optional<std::uint64_t> rss, hwm;
  for (std::string line; std::getline(in, line);) {
    const auto kib = [&line] { return std::stoull(line.substr(line.find(':') + 1)) * 1024; };
    if (line.starts_with("VmRSS:")) rss = kib();
    if (line.starts_with("VmHWM:")) hwm = kib();
  }
  if (!rss || !hwm) return std::nullopt;
  return std::pair{*rss, *hwm};
}

struct Spawned {
  pid_t pid = -1;
  std::string url;
  std::filesystem::path dir;
  std::thread drain;  // reads the coordinator's stdout after the first line, so it never blocks
};

// Starts `PATH agent --coordinator …` and reads the URL from its first stdout line.
void spawn_coordinator(const Options& options, Spawned& spawned) {
  char dir_template[] = "/tmp/cluster_sim.XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) throw std::runtime_error(fmt::format("mkdtemp: {}", std::strerror(errno)));
  spawned.dir = dir_template;
  const std::filesystem::path log = spawned.dir / "coordinator.log";
  std::vector<std::string> args{
      options.spawn_path,
      "agent",
      "--coordinator",
      "--listen",
      "127.0.0.1:0",
      "--max-nodes",
      std::to_string(options.nodes + 1),
      "--state-dir",
      (spawned.dir / "state").string(),
      "--node-name",
      "coord",
      "--report-interval",
      fmt::format("{}ms", std::chrono::duration_cast<std::chrono::milliseconds>(options.interval).count()),
      "--json"};
  args.insert(args.end(), options.coordinator_args.begin(), options.coordinator_args.end());
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(fmt::format("fork: {}", std::strerror(errno)));
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (log_fd >= 0) ::dup2(log_fd, STDERR_FILENO);
    if (options.coordinator_cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(options.coordinator_cpu, &set);
      ::sched_setaffinity(0, sizeof(set), &set);
    }
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "cluster_sim: exec %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(out[1]);
  spawned.pid = pid;
  // The first line, within kSpawnTimeout (poll, so a coordinator that hangs cannot hang us).
  std::string line;
  const auto deadline = SteadyClock::now() + kSpawnTimeout;
  ::fcntl(out[0], F_SETFL, O_NONBLOCK);
  while (line.find('\n') == std::string::npos) {
    char chunk[4096];
    const ssize_t n = ::read(out[0], chunk, sizeof chunk);
    if (n > 0) {
      line.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0) {
      throw std::runtime_error(fmt::format("the coordinator exited before it listened; its log: {}", log.string()));
    } else if (errno != EAGAIN && errno != EINTR) {
      throw std::runtime_error(fmt::format("reading the coordinator's stdout: {}", std::strerror(errno)));
    } else if (SteadyClock::now() > deadline) {
      throw std::runtime_error(fmt::format("the coordinator did not print its address within {} s; its log: {}",
                                           kSpawnTimeout.count(), log.string()));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
  }
  const nlohmann::json banner = nlohmann::json::parse(line.substr(0, line.find('\n')), nullptr, false);
  if (!banner.is_object() || !banner.contains("url") || !banner["url"].is_string()) {
    throw std::runtime_error(fmt::format("the coordinator's first line is not the JSON banner: {}", line));
  }
  spawned.url = banner["url"].get<std::string>();
  ::fcntl(out[0], F_SETFL, 0);
  spawned.drain = std::thread([fd = out[0]] {
    char chunk[4096];
    while (::read(fd, chunk, sizeof chunk) > 0) {
    }
    ::close(fd);
  });
}

// SIGTERM, then the exit status (SIGKILL after 20 s). Returns the exit code, or -signal.
int stop_coordinator(Spawned& spawned) {
  if (spawned.pid <= 0) return 0;
  ::kill(spawned.pid, SIGTERM);
  int status = 0;
  const auto deadline = SteadyClock::now() + std::chrono::seconds{20};
  while (::waitpid(spawned.pid, &status, WNOHANG) == 0) {
    if (SteadyClock::now() > deadline) {
      ::kill(spawned.pid, SIGKILL);
      ::waitpid(spawned.pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  }
  spawned.pid = -1;
  if (spawned.drain.joinable()) spawned.drain.join();
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// ---- the views thread ----

struct ViewStats {
  Latencies cluster, select;
  std::map<std::string, std::uint64_t> failed;  // "GET /v1/cluster 503", "POST /v1/select transport" …
};

void run_views(const std::string& url, double rate, const Window& window, const std::atomic<bool>& stop,
               ViewStats& stats) {
  if (rate <= 0) return;
  gpucluster::HttpClient client(gpucluster::parse_http_url(url, "--coordinator"), 256 * 1024 * 1024);
  const auto period = std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(1.0 / rate));
  auto next = SteadyClock::now();
  for (std::uint64_t i = 0; !stop.load(); ++i) {
    std::this_thread::sleep_until(next);
    next += period;
    const bool cluster = i % 2 == 0;
    const char* method = cluster ? "GET" : "POST";
    const char* target = cluster ? "/v1/cluster" : "/v1/select";
    const std::string body = cluster ? "" : R"({"min_memory_bytes":0})";
    const auto started = SteadyClock::now();
    try {
      const gpucluster::HttpClientResponse response =
          client.request(method, target, body, std::nullopt, kRequestTimeout);
      const auto took = SteadyClock::now() - started;
      if (response.status != 200) {
        ++stats.failed[fmt::format("{} {} {}", method, target, response.status)];
      } else if (window.contains(started)) {
        (cluster ? stats.cluster : stats.select).add(took);
      }
    } catch (const gpucluster::Error&) {
      ++stats.failed[fmt::format("{} {} transport", method, target)];
    }
    if (next < SteadyClock::now()) next = SteadyClock::now();  // behind: do not burst to catch up
  }
}

// ---- main ----

void raise_open_files(std::size_t needed) {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur < needed) {
    throw std::runtime_error(fmt::format("--nodes: {} connections need {} open files; the limit is {} (ulimit -n)",
                                         needed - 64, needed, limit.rlim_cur));
  }
}

std::chrono::nanoseconds duration_option(const std::string& text, const char* field) {
  return gpucluster::parse_duration(text, field);
}

std::string format_ms(const nlohmann::json& value) {
  return value.is_number() ? fmt::format("{:.2f}", value.get<double>()) : "-";
}

int run(const Options& options) {
  raise_open_files(options.nodes + 64);
  Spawned spawned;
  std::string url = options.coordinator_url;
  int pid = options.pid;
  if (!options.spawn_path.empty()) {
    spawn_coordinator(options, spawned);
    url = spawned.url;
    pid = spawned.pid;
  }
  const gpucluster::HttpUrl parsed = gpucluster::parse_http_url(url, "--coordinator");
  net::io_context resolver_context;
  tcp::resolver resolver(resolver_context);
  const tcp::endpoint endpoint = *resolver.resolve(parsed.host, std::to_string(parsed.port)).begin();
  const std::string host_header = fmt::format("{}:{}", parsed.host, parsed.port);

  const auto interval = std::chrono::duration_cast<SteadyClock::duration>(options.interval);
  const auto start = SteadyClock::now() + std::chrono::milliseconds{200};
  Window window{start + std::chrono::duration_cast<SteadyClock::duration>(options.warmup), {}};
  window.end = window.begin + std::chrono::duration_cast<SteadyClock::duration>(options.duration);

  std::vector<std::unique_ptr<net::io_context>> contexts;
  std::vector<NodeStats> stats(options.threads);
  for (std::size_t t = 0; t < options.threads; ++t) contexts.push_back(std::make_unique<net::io_context>(1));
  std::vector<std::unique_ptr<SimNode>> nodes;
  nodes.reserve(options.nodes);
  for (std::size_t i = 0; i < options.nodes; ++i) {
    const std::size_t t = i % options.threads;
    nodes.push_back(std::make_unique<SimNode>(*contexts[t], endpoint, host_header, i, options, window, stats[t]));
  }
  // Start offsets spread evenly over one interval: no synchronized bursts.
  for (std::size_t i = 0; i < options.nodes; ++i) {
    const auto offset = interval * static_cast<SteadyClock::rep>(i) / static_cast<SteadyClock::rep>(options.nodes);
    SimNode* node = nodes[i].get();
    net::post(*contexts[i % options.threads], [node, at = start + offset] { node->start(at); });
  }
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
  for (auto& context : contexts) guards.push_back(net::make_work_guard(*context));
  std::vector<std::thread> threads;
  for (auto& context : contexts) threads.emplace_back([&context] { context->run(); });
  std::atomic<bool> stop_views{false};
  ViewStats view_stats;
  std::thread views([&] { run_views(url, options.views_rate, window, stop_views, view_stats); });

  // The coordinator over the steady window: CPU at both ends, RSS once a second.
  std::optional<ProcTimes> cpu_begin, cpu_end;
  std::uint64_t rss_max = 0, rss_end = 0, hwm_end = 0;
  bool memory_read = false;
  std::this_thread::sleep_until(window.begin);
  const auto measured_from = SteadyClock::now();
  if (pid > 0) cpu_begin = read_proc_times(pid);
  for (auto at = window.begin + std::chrono::seconds{1}; at < window.end; at += std::chrono::seconds{1}) {
    std::this_thread::sleep_until(at);
    if (pid > 0) {
      if (const auto memory = read_proc_memory(pid)) rss_max = std::max(rss_max, memory->first);
    }
  }
  std::this_thread::sleep_until(window.end);
  const auto measured_to = SteadyClock::now();
  if (pid > 0) {
    cpu_end = read_proc_times(pid);
    if (const auto memory = read_proc_memory(pid)) {
      memory_read = true;
      rss_end = memory->first;
      hwm_end = memory->second;
      rss_max = std::max(rss_max, rss_end);
    }
  }
  rusage self_usage{};
  ::getrusage(RUSAGE_SELF, &self_usage);

  stop_views = true;
  views.join();
  for (auto& context : contexts) context->stop();
  for (std::thread& thread : threads) thread.join();
  nodes.clear();  // sockets before their event loops
  int coordinator_exit = 0;
  if (spawned.pid > 0) coordinator_exit = stop_coordinator(spawned);

  NodeStats total;
  for (const NodeStats& s : stats) total.merge(s);
  const double window_seconds = std::chrono::duration<double>(measured_to - measured_from).count();
  nlohmann::json cpu = nullptr;
  if (cpu_begin && cpu_end) cpu = 100.0 * (cpu_end->cpu_seconds - cpu_begin->cpu_seconds) / window_seconds;
  nlohmann::json by_status = nlohmann::json::object();
  for (const auto& [status, count] : total.by_status) by_status[std::to_string(status)] = count;
  nlohmann::json views_failed = nlohmann::json::object();
  for (const auto& [what, count] : view_stats.failed) views_failed[what] = count;
  const double self_cpu_seconds = static_cast<double>(self_usage.ru_utime.tv_sec + self_usage.ru_stime.tv_sec) +
                                  static_cast<double>(self_usage.ru_utime.tv_usec + self_usage.ru_stime.tv_usec) / 1e6;
  const auto optional_bytes = [memory_read](std::uint64_t v) {
    return memory_read ? nlohmann::json(v) : nlohmann::json(nullptr);
  };
  std::uint64_t views_failed_total = 0;
  for (const auto& [what, count] : view_stats.failed) views_failed_total += count;

  nlohmann::json result{
      {"bench", "cluster_sim"},
      {"nodes", options.nodes},
      {"devices_per_node", options.devices},
      {"interval_s", std::chrono::duration<double>(options.interval).count()},
      {"warmup_s", std::chrono::duration<double>(options.warmup).count()},
      {"window_s", window_seconds},
      {"threads", options.threads},
      {"coordinator", url},
      {"coordinator_pid", pid > 0 ? nlohmann::json(pid) : nlohmann::json(nullptr)},
      {"coordinator_cpu_percent_of_core", cpu},
      {"coordinator_rss_bytes", optional_bytes(rss_end)},
      {"coordinator_rss_max_bytes", optional_bytes(rss_max)},
      {"coordinator_hwm_bytes", optional_bytes(hwm_end)},
      {"coordinator_exit", spawned.dir.empty() ? nlohmann::json(nullptr) : nlohmann::json(coordinator_exit)},
      {"reports_sent", total.sent},
      {"reports_ok", total.ok},
      {"reports_per_second", static_cast<double>(total.ok) / window_seconds},
      {"report_latency", total.latency.summary()},
      {"reports_sent_total", total.sent_total},
      {"reports_ok_total", total.ok_total},
      {"failed_reports", total.failed()},
      {"failed_by_status", by_status},
      {"transport_errors", total.transport_errors},
      {"connect_errors", total.connect_errors},
      {"bad_acks", total.bad_acks},
      {"rejected_samples", total.rejected_samples},
      {"inventory_requests", total.inventory_requests},
      {"late_ticks", total.late_ticks},
      {"views_rate", options.views_rate},
      {"view_cluster", view_stats.cluster.summary()},
      {"view_select", view_stats.select.summary()},
      {"views_failed", views_failed_total},
      {"views_failed_by_kind", views_failed},
      {"simulator_cpu_seconds", self_cpu_seconds},
  };
  std::cout << result.dump() << '\n';

  const auto mib = [](const nlohmann::json& v) {
    return v.is_number() ? fmt::format("{:.1f} MiB", v.get<double>() / (1024.0 * 1024.0)) : std::string("-");
  };
  const auto& lat = result["report_latency"];
  const auto& vc = result["view_cluster"];
  const auto& vs = result["view_select"];
  std::cout << fmt::format("\n{:<34} {}\n", "nodes x devices", fmt::format("{} x {}", options.nodes, options.devices))
            << fmt::format("{:<34} {:.1f} s (after {:.1f} s warm-up)\n", "steady window", window_seconds,
                           std::chrono::duration<double>(options.warmup).count())
            << fmt::format("{:<34} {}\n", "coordinator CPU (% of one core)",
                           cpu.is_number() ? fmt::format("{:.2f}", cpu.get<double>()) : "-")
            << fmt::format("{:<34} {} (max {}, VmHWM {})\n", "coordinator RSS", mib(result["coordinator_rss_bytes"]),
                           mib(result["coordinator_rss_max_bytes"]), mib(result["coordinator_hwm_bytes"]))
            << fmt::format("{:<34} {} ok of {} ({:.1f}/s)\n", "reports in the window", total.ok, total.sent,
                           result["reports_per_second"].get<double>())
            << fmt::format("{:<34} p50 {} ms, p99 {} ms, max {} ms\n", "report latency", format_ms(lat["p50_ms"]),
                           format_ms(lat["p99_ms"]), format_ms(lat["max_ms"]))
            << fmt::format("{:<34} p50 {} ms, p99 {} ms, max {} ms ({} asked)\n", "GET /v1/cluster",
                           format_ms(vc["p50_ms"]), format_ms(vc["p99_ms"]), format_ms(vc["max_ms"]),
                           vc["count"].get<std::size_t>())
            << fmt::format("{:<34} p50 {} ms, p99 {} ms, max {} ms ({} asked)\n", "POST /v1/select",
                           format_ms(vs["p50_ms"]), format_ms(vs["p99_ms"]), format_ms(vs["max_ms"]),
                           vs["count"].get<std::size_t>())
            << fmt::format("{:<34} {} (by status {}, transport {}, connect {}, bad acks {})\n", "failed reports",
                           total.failed(), by_status.dump(), total.transport_errors, total.connect_errors,
                           total.bad_acks)
            << fmt::format("{:<34} {} {}\n", "failed views", views_failed_total, views_failed.dump())
            << fmt::format("{:<35} {}\n", "late ticks (report still in flight)", total.late_ticks);
  const bool ok = total.failed() == 0 && views_failed_total == 0 && total.ok > 0 && coordinator_exit == 0;
  if (!spawned.dir.empty()) {
    if (ok) {
      std::error_code ignored;
      std::filesystem::remove_all(spawned.dir, ignored);
    } else {
      std::cerr << fmt::format("cluster_sim: kept the coordinator's log in {}\n", spawned.dir.string());
    }
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"Simulated agents reporting to a real coordinator (docs/benchmarks.md \"Cluster\")"};
  Options options;
  std::string interval = "1s", duration = "60s", warmup = "10s";
  auto* target = app.add_option_group("target");
  target->add_option("--coordinator", options.coordinator_url, "A running coordinator, http://HOST:PORT");
  target->add_option("--spawn", options.spawn_path,
                     "Start PATH agent --coordinator --listen 127.0.0.1:0 … itself (the gpucluster binary)");
  target->require_option(1);
  app.add_option("--pid", options.pid, "With --coordinator: its process id, to measure its CPU and memory");
  app.add_option("--coordinator-arg", options.coordinator_args,
                 "With --spawn: one more argument for the coordinator (repeatable)");
  app.add_option("--coordinator-cpu", options.coordinator_cpu,
                 "With --spawn: pin the coordinator to this CPU (the simulator: taskset)");
  app.add_option("--nodes", options.nodes, "Simulated nodes (default 100)")->check(CLI::Range(1, 1'000'000));
  app.add_option("--devices", options.devices, "Devices per node (default 8)")->check(CLI::Range(1, 256));
  app.add_option("--interval", interval, "Report interval (default 1s; 100ms … 60s)");
  app.add_option("--duration", duration, "Steady window measured (default 60s)");
  app.add_option("--warmup", warmup, "Time before the window: every node has joined (default 10s)");
  app.add_option("--threads", options.threads, "Event-loop threads of the simulator (default 2)")
      ->check(CLI::Range(1, 256));
  app.add_option("--views-rate", options.views_rate,
                 "GET /v1/cluster and POST /v1/select per second, alternating (default 20; 0: none)")
      ->check(CLI::Range(0.0, 10'000.0));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints the help or the error
    return code == 0 ? 0 : 2;
  }
  try {
    options.interval = duration_option(interval, "--interval");
    options.duration = duration_option(duration, "--duration");
    options.warmup = duration_option(warmup, "--warmup");
    if (options.interval < std::chrono::milliseconds{100} || options.interval > std::chrono::seconds{60}) {
      throw gpucluster::InputError("--interval", interval, "must be within 100ms … 60s");
    }
    if (options.duration < std::chrono::seconds{1}) {
      throw gpucluster::InputError("--duration", duration, "must be at least 1s");
    }
    if (options.warmup < options.interval) {
      throw gpucluster::InputError(
          "--warmup", warmup, fmt::format("must be at least one --interval ({}), so every node has joined", interval));
    }
    if (!options.coordinator_url.empty() && !options.coordinator_args.empty()) {
      throw gpucluster::InputError("--coordinator-arg", options.coordinator_args.front(), "is read only with --spawn");
    }
  } catch (const gpucluster::Error& e) {
    std::cerr << "cluster_sim: " << e.what() << '\n';
    return 2;
  }
  try {
    return run(options);
  } catch (const std::exception& e) {
    std::cerr << "cluster_sim: " << e.what() << '\n';
    return 2;
  }
}
