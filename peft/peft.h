// peft/peft.h — everything a user of the PEFT library needs, in one include:
//   peft/method.h         what a method is (Method), the Linear-wrapping base (MergeableMethod),
//                         target matching
//   peft/config_reader.h  reading adapter_config.json with HF's field names (ConfigReader)
//   peft/methods.h        one factory per method, and make_method choosing by peft_type
//   peft/peft_model.h     several adapters on one base (PeftModel), trainable_line
//   peft/adapter_files.h  save_adapter / load_adapter: HF PEFT's adapter folders
#pragma once
#include "adapter_files.h"
#include "config_reader.h"
#include "method.h"
#include "methods.h"
#include "peft_model.h"
