// The OpenAPI 3.1 description of the whole API. A test checks it against the router's routes
// and CI validates it with openapi-spec-validator.
let openAPIDocument = #"""
{
 "openapi": "3.1.0",
 "info": {
  "title": "rte-agent API",
  "version": "0.1.0",
  "description": "Control a device under test wired to a 3mdeb RTE: leases, power, GPIO lines, serial capture and console, autonomous boot runs. Errors are RFC 9457 problem documents."
 },
 "servers": [
  {
   "url": "http://127.0.0.1:8000"
  }
 ],
 "security": [
  {
   "bearer": []
  },
  {
   "basic": []
  }
 ],
 "paths": {
  "/api/v1/health": {
   "get": {
    "summary": "Liveness",
    "tags": [
     "status"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "security": []
   }
  },
  "/api/v1/openapi.json": {
   "get": {
    "summary": "This document",
    "tags": [
     "status"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "security": []
   }
  },
  "/api/v1/status": {
   "get": {
    "summary": "Agent version, uptime, DUT, power, lease summary, serial state",
    "tags": [
     "status"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/metrics": {
   "get": {
    "summary": "Prometheus metrics",
    "tags": [
     "status"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "text/plain": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "security": []
   }
  },
  "/api/v1/leases": {
   "get": {
    "summary": "Current lease and waiting queue",
    "tags": [
     "leases"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "post": {
    "summary": "Take the device (optionally wait in the FIFO queue)",
    "tags": [
     "leases"
    ],
    "responses": {
     "201": {
      "description": "Lease granted, with its token",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "additionalProperties": false,
        "properties": {
         "ttl_s": {
          "type": "integer"
         },
         "purpose": {
          "type": "string"
         },
         "wait_s": {
          "type": "integer"
         },
         "request_id": {
          "type": "string"
         },
         "bind_address": {
          "type": "boolean"
         }
        }
       }
      }
     }
    }
   }
  },
  "/api/v1/leases/current": {
   "get": {
    "summary": "The current lease",
    "tags": [
     "leases"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "delete": {
    "summary": "Release the lease",
    "tags": [
     "leases"
    ],
    "responses": {
     "204": {
      "description": "Released"
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ]
   }
  },
  "/api/v1/leases/current/renew": {
   "post": {
    "summary": "Extend the lease",
    "tags": [
     "leases"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "additionalProperties": false,
        "properties": {
         "ttl_s": {
          "type": "integer"
         }
        }
       }
      }
     }
    }
   }
  },
  "/api/v1/leases/current/bind": {
   "post": {
    "summary": "Bind the lease to a client address (legacy API and TCP console)",
    "tags": [
     "leases"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "additionalProperties": false,
        "properties": {
         "address": {
          "type": "string"
         }
        }
       }
      }
     }
    }
   }
  },
  "/api/v1/leases/current/break": {
   "post": {
    "summary": "Admin: take the device from its holder",
    "tags": [
     "leases"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "requestBody": {
     "required": false,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "additionalProperties": false,
        "properties": {
         "lease_id": {
          "type": "string",
          "description": "break only this lease; 409 not-current when another one holds the device"
         }
        }
       }
      }
     }
    }
   }
  },
  "/api/v1/power": {
   "get": {
    "summary": "Power state",
    "tags": [
     "power"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "post": {
    "summary": "Power action",
    "tags": [
     "power"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "additionalProperties": false,
        "properties": {
         "action": {
          "type": "string",
          "enum": [
           "on",
           "off",
           "hard_off",
           "reset",
           "cycle",
           "press",
           "long_press"
          ]
         }
        },
        "required": [
         "action"
        ]
       }
      }
     }
    }
   }
  },
  "/api/v1/lines": {
   "get": {
    "summary": "GPIO lines by role",
    "tags": [
     "gpio"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/lines/{role}": {
   "get": {
    "summary": "One GPIO line",
    "tags": [
     "gpio"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "role",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   },
   "post": {
    "summary": "Set an output or pulse it",
    "tags": [
     "gpio"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "role",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     },
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "additionalProperties": false,
        "properties": {
         "active": {
          "type": "boolean"
         },
         "pulse_ms": {
          "type": "integer"
         }
        }
       }
      }
     }
    }
   }
  },
  "/api/v1/serial/log": {
   "get": {
    "summary": "Captured bytes from an offset (base64), with the next offset",
    "tags": [
     "serial"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "from",
      "in": "query",
      "schema": {
       "type": "integer"
      }
     },
     {
      "name": "limit",
      "in": "query",
      "schema": {
       "type": "integer"
      }
     }
    ]
   }
  },
  "/api/v1/serial/stream": {
   "get": {
    "summary": "Follow the serial output (chunked bytes, or server-sent events with format=sse)",
    "tags": [
     "serial"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/octet-stream": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "from",
      "in": "query",
      "schema": {
       "type": "integer"
      }
     },
     {
      "name": "format",
      "in": "query",
      "schema": {
       "type": "string",
       "enum": [
        "raw",
        "sse"
       ]
      }
     }
    ]
   }
  },
  "/api/v1/serial/input": {
   "post": {
    "summary": "Write to the DUT's serial port",
    "tags": [
     "serial"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "additionalProperties": false,
        "properties": {
         "text": {
          "type": "string"
         },
         "base64": {
          "type": "string"
         }
        }
       }
      }
     }
    }
   }
  },
  "/api/v1/console": {
   "get": {
    "summary": "Interactive console (HTTP Upgrade: rte-console); typing needs the lease token",
    "tags": [
     "serial"
    ],
    "responses": {
     "101": {
      "description": "Switching protocols"
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ]
   }
  },
  "/api/v1/runs": {
   "post": {
    "summary": "Start an autonomous boot test run",
    "tags": [
     "runs"
    ],
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseTokenOptional"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "$ref": "#/components/schemas/RunSpec"
       }
      },
      "application/yaml": {
       "schema": {
        "type": "string",
        "description": "the same spec in YAML, as in a spec file"
       }
      }
     }
    },
    "responses": {
     "202": {
      "description": "Accepted; the run is queued",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Run"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "get": {
    "summary": "List runs, newest first",
    "tags": [
     "runs"
    ],
    "responses": {
     "200": {
      "description": "Runs",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "runs": {
           "type": "array",
           "items": {
            "type": "object"
           }
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/runs/{id}": {
   "get": {
    "summary": "A run's state, stage timings and per-iteration results",
    "tags": [
     "runs"
    ],
    "responses": {
     "200": {
      "description": "The run",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Run"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   },
   "delete": {
    "summary": "Cancel a run (the DUT is left powered off)",
    "tags": [
     "runs"
    ],
    "responses": {
     "200": {
      "description": "The cancelled run",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Run"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/api/v1/runs/{id}/transcript": {
   "get": {
    "summary": "The serial bytes of the run",
    "tags": [
     "runs"
    ],
    "responses": {
     "200": {
      "description": "Raw capture bytes",
      "content": {
       "application/octet-stream": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/api/v1/runs/{id}/events": {
   "get": {
    "summary": "Live progress as server-sent events",
    "tags": [
     "runs"
    ],
    "responses": {
     "200": {
      "description": "Event stream",
      "content": {
       "text/event-stream": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/api/v1/gpio": {
   "get": {
    "summary": "RTE compatibility: list the numbered lines",
    "tags": [
     "compat"
    ],
    "security": [],
    "responses": {
     "200": {
      "description": "Lines",
      "content": {
       "application/json": {
        "schema": {
         "type": "array",
         "items": {
          "$ref": "#/components/schemas/LegacyLine"
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/gpio/{n}": {
   "get": {
    "summary": "RTE compatibility: one line's state",
    "tags": [
     "compat"
    ],
    "security": [],
    "parameters": [
     {
      "name": "n",
      "in": "path",
      "required": true,
      "schema": {
       "type": "integer"
      },
      "description": "the line's compat_number"
     }
    ],
    "responses": {
     "200": {
      "description": "The line",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/LegacyLine"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "patch": {
    "summary": "RTE compatibility: set a line, or hold it for `time` seconds then revert (a button press)",
    "tags": [
     "compat"
    ],
    "security": [],
    "parameters": [
     {
      "name": "n",
      "in": "path",
      "required": true,
      "schema": {
       "type": "integer"
      },
      "description": "the line's compat_number"
     }
    ],
    "description": "No token: accepted from the address the current lease is bound to, or, when nobody holds the device, from compat.trusted_networks (403 otherwise; 423 while someone else holds the device), decided before the number is looked up. Read as 3mdeb RteCtrl reads it: any Content-Type, unknown fields ignored, keys in any case. state: 0 writes 0, any other unsigned integer writes 1, missing writes 0. direction: \"in\"/\"i\" makes the line an input (a state is then ignored), \"out\"/\"o\" an output (refused with 403 for lines the config marks input_only). time: whole seconds; the answer comes at once and the opposite of the requested state is written when the time is up, unless a later write to the line comes first. Errors: 403 {\"error\": \"bad parameters\"} (not a JSON object, a string, a fraction, a negative, time over 86400, an unknown direction), 404 {\"error\": \"id not found\"}, as problem documents.",
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "properties": {
         "state": {
          "type": "integer",
          "minimum": 0
         },
         "direction": {
          "type": "string",
          "enum": [
           "",
           "in",
           "i",
           "out",
           "o"
          ]
         },
         "time": {
          "type": "integer",
          "minimum": 0,
          "maximum": 86400
         }
        }
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "The line after the write",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/LegacyLine"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/flash/image": {
   "put": {
    "summary": "Upload the firmware image to flash (raw or gzip; exactly the chip's size once unpacked)",
    "tags": [
     "flash"
    ],
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/octet-stream": {
       "schema": {
        "type": "string",
        "contentEncoding": "binary"
       }
      }
     }
    },
    "responses": {
     "201": {
      "description": "Stored",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "bytes": {
           "type": "integer"
          },
          "sha256": {
           "type": "string"
          },
          "upload_md5": {
           "type": "string"
          },
          "uploaded_by": {
           "type": "string"
          },
          "uploaded_at": {
           "type": "integer"
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "get": {
    "summary": "The uploaded image: size, SHA-256, who and when",
    "tags": [
     "flash"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "bytes": {
           "type": "integer"
          },
          "sha256": {
           "type": "string"
          },
          "upload_md5": {
           "type": "string"
          },
          "uploaded_by": {
           "type": "string"
          },
          "uploaded_at": {
           "type": "integer"
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "delete": {
    "summary": "Remove the uploaded image",
    "tags": [
     "flash"
    ],
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ],
    "responses": {
     "204": {
      "description": "Removed"
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/flash/jobs": {
   "post": {
    "summary": "Start a flash operation: the whole S5 → SPI on → flashrom → SPI off → CMOS → power sequence",
    "tags": [
     "flash"
    ],
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "additionalProperties": false,
        "required": [
         "operation"
        ],
        "properties": {
         "operation": {
          "type": "string",
          "enum": [
           "probe",
           "read",
           "write",
           "erase"
          ]
         },
         "verify": {
          "type": "boolean",
          "default": true
         },
         "layout": {
          "type": "string",
          "enum": [
           "ifd",
           "fmap"
          ]
         },
         "layout_file": {
          "type": "string",
          "description": "flashrom layout text: start:end name per line"
         },
         "regions": {
          "type": "array",
          "items": {
           "type": "string"
          }
         }
        }
       }
      }
     }
    },
    "responses": {
     "202": {
      "description": "Started",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "id": {
           "type": "string"
          },
          "operation": {
           "type": "string",
           "enum": [
            "probe",
            "read",
            "write",
            "erase"
           ]
          },
          "state": {
           "type": "string",
           "enum": [
            "running",
            "succeeded",
            "failed"
           ]
          },
          "phase": {
           "type": "string"
          },
          "percent": {
           "type": "integer"
          },
          "steps": {
           "type": "array",
           "items": {
            "type": "object"
           }
          },
          "failure": {
           "type": "object"
          },
          "chip": {
           "type": "string"
          },
          "flashrom_ms": {
           "type": "number"
          },
          "duration_ms": {
           "type": "number"
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "get": {
    "summary": "The last flash jobs",
    "tags": [
     "flash"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/flash/jobs/{id}": {
   "get": {
    "summary": "A flash job: state, steps with timings, failure",
    "tags": [
     "flash"
    ],
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "id": {
           "type": "string"
          },
          "operation": {
           "type": "string",
           "enum": [
            "probe",
            "read",
            "write",
            "erase"
           ]
          },
          "state": {
           "type": "string",
           "enum": [
            "running",
            "succeeded",
            "failed"
           ]
          },
          "phase": {
           "type": "string"
          },
          "percent": {
           "type": "integer"
          },
          "steps": {
           "type": "array",
           "items": {
            "type": "object"
           }
          },
          "failure": {
           "type": "object"
          },
          "chip": {
           "type": "string"
          },
          "flashrom_ms": {
           "type": "number"
          },
          "duration_ms": {
           "type": "number"
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/flash/jobs/{id}/events": {
   "get": {
    "summary": "A flash job's steps and flashrom's progress as server-sent events",
    "tags": [
     "flash"
    ],
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "Event stream",
      "content": {
       "text/event-stream": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/flash/read": {
   "get": {
    "summary": "Download what the last read job read from the chip",
    "tags": [
     "flash"
    ],
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     }
    ],
    "responses": {
     "200": {
      "description": "The chip's contents (X-SHA256 header)",
      "content": {
       "application/octet-stream": {
        "schema": {
         "type": "string",
         "contentEncoding": "binary"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/flash/file": {
   "post": {
    "summary": "RTE compatibility: upload the image (multipart field file, gzip accepted)",
    "tags": [
     "compat"
    ],
    "security": [],
    "requestBody": {
     "required": true,
     "content": {
      "multipart/form-data": {
       "schema": {
        "type": "object",
        "properties": {
         "file": {
          "type": "string",
          "contentEncoding": "binary"
         }
        }
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "file_md5": {
           "type": "string"
          },
          "file_size": {
           "type": "integer"
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "get": {
    "summary": "RTE compatibility: the uploaded file's md5 and size",
    "tags": [
     "compat"
    ],
    "security": [],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "delete": {
    "summary": "RTE compatibility: remove the uploaded file",
    "tags": [
     "compat"
    ],
    "security": [],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/flash/config": {
   "get": {
    "summary": "RTE compatibility: the SPI speed (kHz)",
    "tags": [
     "compat"
    ],
    "security": [],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "patch": {
    "summary": "RTE compatibility: set the SPI speed (kHz)",
    "tags": [
     "compat"
    ],
    "security": [],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "properties": {
         "speed": {
          "type": "integer"
         }
        }
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/flash": {
   "put": {
    "summary": "RTE compatibility: flash the uploaded file named by its md5",
    "tags": [
     "compat"
    ],
    "security": [],
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "properties": {
         "file_md5": {
          "type": "string"
         }
        }
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "get": {
    "summary": "RTE compatibility: flashing status and percent",
    "tags": [
     "compat"
    ],
    "security": [],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/artifacts": {
   "get": {
    "summary": "Artifacts with sizes, hashes, ages and the URLs the DUT fetches",
    "tags": [
     "artifacts"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "artifacts": {
           "type": "array",
           "items": {
            "type": "object",
            "properties": {
             "name": {
              "type": "string"
             },
             "bytes": {
              "type": "integer"
             },
             "sha256": {
              "type": "string"
             },
             "uploaded_by": {
              "type": "string"
             },
             "uploaded_at": {
              "type": "string"
             },
             "last_used_at": {
              "type": "string"
             },
             "age_s": {
              "type": "integer"
             },
             "url": {
              "type": "string",
              "description": "what the DUT fetches while the current lease holds the board"
             }
            }
           }
          },
          "total_bytes": {
           "type": "integer"
          },
          "quota_bytes": {
           "type": "integer"
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/artifacts/{name}": {
   "put": {
    "summary": "Upload a boot file for the DUT (streamed to disk, SHA-256 on the way)",
    "tags": [
     "artifacts"
    ],
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     },
     {
      "name": "name",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string",
       "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
      }
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "application/octet-stream": {
       "schema": {
        "type": "string",
        "contentEncoding": "binary"
       }
      }
     }
    },
    "responses": {
     "201": {
      "description": "Stored",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "name": {
           "type": "string"
          },
          "bytes": {
           "type": "integer"
          },
          "sha256": {
           "type": "string"
          },
          "uploaded_by": {
           "type": "string"
          },
          "uploaded_at": {
           "type": "string"
          },
          "last_used_at": {
           "type": "string"
          },
          "age_s": {
           "type": "integer"
          },
          "url": {
           "type": "string",
           "description": "what the DUT fetches while the current lease holds the board"
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "get": {
    "summary": "Download an artifact",
    "tags": [
     "artifacts"
    ],
    "parameters": [
     {
      "name": "name",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string",
       "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "The file (X-SHA256)",
      "content": {
       "application/octet-stream": {
        "schema": {
         "type": "string",
         "contentEncoding": "binary"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "delete": {
    "summary": "Remove an artifact",
    "tags": [
     "artifacts"
    ],
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseToken"
     },
     {
      "name": "name",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string",
       "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
      }
     }
    ],
    "responses": {
     "204": {
      "description": "Removed"
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/runs/{id}/iterations/{n}/log": {
   "get": {
    "summary": "One iteration's serial log, kept with the run (runs.iteration_log_max_mib)",
    "tags": [
     "runs"
    ],
    "parameters": [
     {
      "name": "id",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     },
     {
      "name": "n",
      "in": "path",
      "required": true,
      "schema": {
       "type": "integer"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "The bytes the DUT printed",
      "content": {
       "application/octet-stream": {
        "schema": {
         "type": "string",
         "contentEncoding": "binary"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/me": {
   "get": {
    "summary": "Who the bearer token is (the web page shows it)",
    "tags": [
     "web"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "user": {
           "type": "string"
          },
          "admin": {
           "type": "boolean"
          },
          "authentication": {
           "type": "boolean"
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/specs": {
   "get": {
    "summary": "The run specs this agent offers (web.specs)",
    "tags": [
     "web"
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "specs": {
           "type": "array",
           "items": {
            "type": "object",
            "properties": {
             "name": {
              "type": "string"
             },
             "bytes": {
              "type": "integer"
             }
            }
           }
          }
         }
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/specs/{name}": {
   "get": {
    "summary": "One offered run spec, as written (YAML)",
    "tags": [
     "web"
    ],
    "parameters": [
     {
      "name": "name",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "text/yaml": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/": {
   "get": {
    "summary": "The web page",
    "tags": [
     "web"
    ],
    "security": [],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/ui/{name}": {
   "get": {
    "summary": "The web page's files",
    "tags": [
     "web"
    ],
    "security": [],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/octet-stream": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "name",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/ui/xterm/{name}": {
   "get": {
    "summary": "xterm.js for the page's console (Debian's libjs-xterm)",
    "tags": [
     "web"
    ],
    "security": [],
    "responses": {
     "200": {
      "description": "OK",
      "content": {
       "application/octet-stream": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    },
    "parameters": [
     {
      "name": "name",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/api/v1/power/value": {
   "get": {
    "summary": "Power as 1 (on) or 0 (off): the shape of labgrid's NetworkPowerPort model rest",
    "tags": [
     "power"
    ],
    "responses": {
     "200": {
      "description": "1 or 0",
      "content": {
       "text/plain": {
        "schema": {
         "type": "string",
         "enum": [
          "1",
          "0"
         ]
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "put": {
    "summary": "Switch power like a PDU outlet: 1 on, 0 cuts the supply (hard_off)",
    "tags": [
     "power"
    ],
    "description": "Needs the current lease: X-Lease-Token, or an engine identity that holds it.",
    "parameters": [
     {
      "$ref": "#/components/parameters/LeaseTokenOptional"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "text/plain": {
       "schema": {
        "type": "string",
        "enum": [
         "1",
         "0"
        ]
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "1 or 0",
      "content": {
       "text/plain": {
        "schema": {
         "type": "string",
         "enum": [
          "1",
          "0"
         ]
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  },
  "/api/v1/lines/{role}/value": {
   "get": {
    "summary": "A line as 1 (active) or 0: the shape of labgrid's HttpDigitalOutput",
    "tags": [
     "gpio"
    ],
    "parameters": [
     {
      "name": "role",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     }
    ],
    "responses": {
     "200": {
      "description": "1 or 0",
      "content": {
       "text/plain": {
        "schema": {
         "type": "string",
         "enum": [
          "1",
          "0"
         ]
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   },
   "put": {
    "summary": "Set a line: 1 active, 0 inactive",
    "tags": [
     "gpio"
    ],
    "description": "Needs the current lease: X-Lease-Token, or an engine identity that holds it.",
    "parameters": [
     {
      "name": "role",
      "in": "path",
      "required": true,
      "schema": {
       "type": "string"
      }
     },
     {
      "$ref": "#/components/parameters/LeaseTokenOptional"
     }
    ],
    "requestBody": {
     "required": true,
     "content": {
      "text/plain": {
       "schema": {
        "type": "string",
        "enum": [
         "1",
         "0"
        ]
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "1 or 0",
      "content": {
       "text/plain": {
        "schema": {
         "type": "string",
         "enum": [
          "1",
          "0"
         ]
        }
       }
      }
     },
     "default": {
      "$ref": "#/components/responses/Problem"
     }
    }
   }
  }
 },
 "components": {
  "securitySchemes": {
   "bearer": {
    "type": "http",
    "scheme": "bearer",
    "description": "A user token from auth.tokens. A token marked engine: true (labgrid, LAVA) acts under the lease its user holds without X-Lease-Token."
   },
   "basic": {
    "type": "http",
    "scheme": "basic",
    "description": "USER:TOKEN, for clients that can only put credentials in a URL (http://USER:TOKEN@rte:8000/…, labgrid's power drivers); USER must be the token's user."
   }
  },
  "parameters": {
   "LeaseToken": {
    "name": "X-Lease-Token",
    "in": "header",
    "required": true,
    "schema": {
     "type": "string"
    },
    "description": "Token of the current lease"
   },
   "LeaseTokenOptional": {
    "name": "X-Lease-Token",
    "in": "header",
    "required": false,
    "schema": {
     "type": "string"
    }
   }
  },
  "responses": {
   "Problem": {
    "description": "RFC 9457 problem document",
    "content": {
     "application/problem+json": {
      "schema": {
       "type": "object",
       "required": [
        "type",
        "title",
        "status",
        "detail"
       ],
       "properties": {
        "type": {
         "type": "string"
        },
        "title": {
         "type": "string"
        },
        "status": {
         "type": "integer"
        },
        "detail": {
         "type": "string"
        },
        "holder": {
         "type": "string"
        },
        "purpose": {
         "type": "string"
        },
        "expires_at": {
         "type": "string"
        }
       }
      }
     }
    }
   }
  },
  "schemas": {
   "Run": {
    "type": "object",
    "required": [
     "id",
     "state",
     "user",
     "iterations"
    ],
    "properties": {
     "id": {
      "type": "string"
     },
     "name": {
      "type": "string"
     },
     "user": {
      "type": "string"
     },
     "state": {
      "type": "string",
      "enum": [
       "queued",
       "waiting_for_device",
       "running",
       "passed",
       "failed",
       "cancelled",
       "interrupted",
       "error"
      ]
     },
     "current_stage": {
      "type": [
       "string",
       "null"
      ]
     },
     "current_iteration": {
      "type": [
       "integer",
       "null"
      ]
     },
     "repeat_count": {
      "type": "integer"
     },
     "iterations": {
      "type": "array",
      "items": {
       "type": "object"
      }
     },
     "summary": {
      "type": [
       "object",
       "null"
      ]
     },
     "message": {
      "type": [
       "string",
       "null"
      ]
     },
     "capture_from": {
      "type": [
       "integer",
       "null"
      ]
     },
     "capture_to": {
      "type": [
       "integer",
       "null"
      ]
     },
     "spec": {
      "type": "object"
     }
    }
   },
   "RunSpec": {
    "type": "object",
    "additionalProperties": false,
    "description": "A boot test: power, firmware, iPXE, login, commands, timeouts, repeat.",
    "properties": {
     "name": {
      "type": "string"
     },
     "power": {
      "type": "string",
      "enum": [
       "on",
       "cycle",
       "reset",
       "none"
      ]
     },
     "firmware": {
      "type": "object",
      "properties": {
       "banner": {
        "type": "array",
        "items": {
         "type": "string"
        }
       },
       "boot_menu": {
        "type": "object",
        "properties": {
         "key": {
          "type": "string"
         },
         "entry": {
          "type": "string"
         },
         "prompt": {
          "type": "string"
         }
        }
       }
      }
     },
     "ipxe": {
      "type": "object",
      "properties": {
       "interrupt": {
        "type": "boolean"
       },
       "skip_banner_wait": {
        "type": "boolean",
        "description": "Without interrupt: a space ends iPXE's \"Press Ctrl-B\" wait, so its autoboot starts at once."
       },
       "commands": {
        "type": "array",
        "items": {
         "type": "string"
        }
       },
       "script": {
        "type": "array",
        "items": {
         "type": "string"
        }
       },
       "menu_entry": {
        "type": "string"
       },
       "dhcp_retries": {
        "type": "integer"
       }
      }
     },
     "login": {
      "type": "object",
      "properties": {
       "prompt": {
        "type": "string"
       },
       "username": {
        "type": "string"
       },
       "password": {
        "type": "string"
       },
       "password_prompt": {
        "type": "string"
       },
       "shell_prompt": {
        "type": "string"
       }
      }
     },
     "commands": {
      "type": "array",
      "items": {
       "type": "object",
       "properties": {
        "send": {
         "type": "string"
        },
        "expect": {
         "type": "string"
        },
        "expect_regex": {
         "type": "string"
        },
        "timeout_s": {
         "type": "number"
        }
       }
      }
     },
     "timeouts": {
      "type": "object",
      "properties": {
       "firmware": {
        "type": "number"
       },
       "ipxe": {
        "type": "number"
       },
       "kernel": {
        "type": "number"
       },
       "login": {
        "type": "number"
       }
      }
     },
     "repeat": {
      "type": "integer",
      "minimum": 1
     },
     "wait_s": {
      "type": "integer",
      "minimum": 0
     }
    }
   },
   "LegacyLine": {
    "type": "object",
    "required": [
     "id",
     "state",
     "description",
     "direction"
    ],
    "properties": {
     "id": {
      "type": "integer",
      "description": "compat_number"
     },
     "description": {
      "type": "string",
      "description": "RteCtrl's name for the line (compat_name), e.g. apu_pwr"
     },
     "role": {
      "type": "string",
      "description": "the line's role in the native API"
     },
     "direction": {
      "type": "string",
      "enum": [
       "in",
       "out"
      ]
     },
     "state": {
      "type": "integer",
      "enum": [
       0,
       1
      ],
      "description": "open-collector lines: 1 = driven low; regular lines: 1 = high"
     }
    }
   }
  }
 }
}
"""#
