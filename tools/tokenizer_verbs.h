// superweight-engine's tokenizer verbs, kept apart from the model verbs:
//   tokenize MODEL|VOCAB.gguf|tokenizer.json|DIR --text_file=F|--text=T
//       [--bos=0|1] [--eos=0|1] [--parse_special=0|1] [--decode] [--timing]  -> {"ids": [...]}
//   tokenize ... --texts_json=F  (a JSON array of strings) -> {"ids": [[...]], "decoded": [...]}
//   detokenize MODEL|VOCAB.gguf|tokenizer.json|DIR --ids=1,2,3  -> {"text": ...}
// A GGUF (a model's or a vocabulary-only one), a tokenizer.json, or a directory holding a
// tokenizer.json and no config.json is opened as a tokenizer alone; any other PATH is opened
// as a model for its tokenizer. Special tokens in the text are text unless --parse_special=1;
// text that is not UTF-8 is refused.
#pragma once

#include <map>
#include <string>

namespace superweight {

// Prints the verb's JSON answer on stdout and returns 0, or an error on stderr and 1.
int RunTokenizerVerb(const std::string& verb, const std::string& path,
                     const std::map<std::string, std::string>& flags);

}  // namespace superweight
