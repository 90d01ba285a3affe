// superweight: the command-line client. Depends on the contract (proto/) only.
//   superweight --server=HOST:PORT VERB [flags]
// Verbs: health, info, models, locate, score, ablate, quantize, check, jobs, watch, cancel, each
// in its unit under verbs/ (verb.h); their flags in flags.cc, --help and the flags' checks in
// help.cc. --zero=LAYER,ROW,COL and --set=LAYER,ROW,COL,VALUE (repeatable) edit down_proj weights
// for score.
// Exit codes: 0 done, 1 the server refused or failed (its status is printed) or a watched job
// ended FAILED or CANCELLED, 2 usage (a bad or contradictory flag, a file a flag names that
// cannot be read or written), 3 an expectation did not hold (--expect; check: the super weights
// or perplexity not kept), 130 interrupted (SIGINT or SIGTERM; a job the client waits on is
// cancelled first).
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "cli/command_line.h"
#include "client/common.h"
#include "client/flags.h"
#include "client/help.h"
#include "client/job.h"
#include "client/verb.h"
#include "engine/util/build_info.h"
#include "grpcpp/grpcpp.h"
#include "superweight/v1/superweight.grpc.pb.h"

namespace sw = superweight::client;

namespace {

// TLS with --ca_cert's roots, else a plain channel; an error is a usage error.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials() {
  const std::string ca_cert = absl::GetFlag(FLAGS_ca_cert);
  if (ca_cert.empty()) return grpc::InsecureChannelCredentials();
  absl::StatusOr<std::string> pem = sw::ReadFlagFile("ca_cert", ca_cert);
  if (!pem.ok()) return pem.status();
  // grpc takes an empty or garbled root set for "the system's roots", and then reports only
  // a failed handshake.
  if (!absl::StrContains(*pem, "-----BEGIN CERTIFICATE-----")) {
    return absl::InvalidArgumentError("--ca_cert " + ca_cert + " holds no PEM certificate");
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = *std::move(pem);
  return grpc::SslCredentials(ssl);
}

// --token_file's bearer token; "" without the flag.
absl::StatusOr<std::string> Token() {
  const std::string path = absl::GetFlag(FLAGS_token_file);
  if (path.empty()) return "";
  absl::StatusOr<std::string> file = sw::ReadFlagFile("token_file", path);
  if (!file.ok()) return file.status();
  std::string token(absl::StripAsciiWhitespace(*file));
  if (token.empty()) return absl::InvalidArgumentError("--token_file " + path + " is empty");
  return token;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything can start a thread (gRPC starts its own): every thread inherits the mask,
  // and only WatchForInterrupts' thread takes the signals.
  sigset_t interrupts;
  sigemptyset(&interrupts);
  sigaddset(&interrupts, SIGINT);
  sigaddset(&interrupts, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &interrupts, nullptr);
  sw::RepeatedFlags repeated;
  absl::StatusOr<superweight::cli::CommandLine> command_line =
      superweight::cli::Parse(argc, argv, repeated.ByName());
  if (!command_line.ok()) return sw::Usage(std::string(command_line.status().message()));
  const std::vector<std::string>& positional = command_line->positional;
  if (command_line->help) {
    sw::PrintHelp(positional.size() == 1 && sw::FindVerb(positional[0]) ? positional[0] : "");
    return 0;
  }
  if (command_line->version) {
    std::cout << superweight::VersionLine("superweight") << "\n";
    return 0;
  }
  if (positional.size() != 1) {
    return sw::Usage("give exactly one verb: " + absl::StrJoin(sw::VerbNames(), ", ") +
                     " (--help lists them)");
  }
  const sw::Verb* verb = sw::FindVerb(positional[0]);
  if (verb == nullptr) return sw::Usage("unknown verb " + positional[0]);
  if (absl::Status s = sw::CheckFlagsFit(*verb, command_line->given); !s.ok()) {
    return sw::Usage(std::string(s.message()));
  }
  if (const std::string plot = absl::GetFlag(FLAGS_plot); !plot.empty()) {
    if (absl::Status s = sw::CheckWritable("plot", plot); !s.ok()) {
      return sw::Usage(std::string(s.message()));
    }
  }

  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = Credentials();
  if (!creds.ok()) return sw::Usage(std::string(creds.status().message()));
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), *creds, channel_args);
  auto stub = superweight::v1::SuperWeightService::NewStub(channel);
  grpc::ClientContext call;
  call.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_timeout) * 1000)));
  absl::StatusOr<std::string> token = Token();
  if (!token.ok()) return sw::Usage(std::string(token.status().message()));
  if (!token->empty()) call.AddMetadata("authorization", "Bearer " + *token);
  sw::WatchForInterrupts(interrupts, stub.get(), *token);
  sw::VerbContext context;
  context.channel = channel;
  context.stub = stub.get();
  context.call = &call;
  context.token = *token;
  context.repeated = &repeated;
  context.json = absl::GetFlag(FLAGS_json);
  context.no_wait = absl::GetFlag(FLAGS_no_wait);
  // On a terminal, long jobs are submitted without waiting and followed with a progress bar.
  context.progress = ::isatty(2) && !context.json && !context.no_wait;
  return verb->run(context);
}
