// The client's verbs behind one small interface: each verb's unit (verbs/*.cc) reads its flags,
// builds its request, prints the answer and draws its plot; main.cc picks the verb by name and
// returns its Exit. Verbs() is also the table that --help and the flags' applicability read.
#ifndef SUPERWEIGHT_CLIENT_VERB_H_
#define SUPERWEIGHT_CLIENT_VERB_H_

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/flags.h"
#include "grpcpp/grpcpp.h"
#include "superweight/v1/superweight.grpc.pb.h"

namespace superweight::client {

using Stub = v1::SuperWeightService::Stub;

// How a verb ended, as the process's exit code. (130, interrupted, is the interrupt's thread's.)
enum Exit : int {
  kDone = 0,
  kFailed = 1,         // the server refused or failed, or a watched job did not succeed
  kUsage = 2,          // a bad or contradictory flag; a file a flag names is unreadable
  kNotAsExpected = 3,  // locate's --expect, or check, did not hold
};

// What every verb is handed: the connection, made once by main, and what the shared flags say.
struct VerbContext {
  std::shared_ptr<grpc::Channel> channel;  // the stub's; health calls the Health service on it
  Stub* stub = nullptr;
  grpc::ClientContext* call = nullptr;  // the verb's one call: --timeout's deadline, the token
  std::string token;                    // for calls besides that one (following a job)
  const RepeatedFlags* repeated = nullptr;
  bool json = false;
  bool no_wait = false;
  bool progress = false;  // jobs are submitted, then followed with a progress bar on stderr
};

struct Verb {
  const char* name;
  const char* summary;             // its --help group's title: "NAME: SUMMARY"
  std::vector<std::string> flags;  // that group's flags (shared groups are in help.cc)
  // Its flags that contradict each other (or need another), checked before connecting, after
  // CheckFlagsFit's shared checks; null when there are none.
  absl::Status (*check_flags)(const std::set<std::string>& given);
  Exit (*run)(const VerbContext& context);
};

// Every verb, in the order of --help.
const std::vector<Verb>& Verbs();
std::vector<std::string> VerbNames();
// Null when `name` is no verb.
const Verb* FindVerb(const std::string& name);

// Each verb's unit defines one.
Verb HealthVerb();
Verb InfoVerb();
Verb ModelsVerb();
Verb LocateVerb();
Verb ScoreVerb();
Verb AblateVerb();
Verb QuantizeVerb();
Verb CheckVerb();
Verb RecipeVerb();
Verb JobsVerb();
Verb WatchVerb();
Verb CancelVerb();

}  // namespace superweight::client

#endif  // SUPERWEIGHT_CLIENT_VERB_H_
