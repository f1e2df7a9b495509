#ifndef RTE_CYAML_SHIM_H
#define RTE_CYAML_SHIM_H
#include <yaml.h>
#endif
