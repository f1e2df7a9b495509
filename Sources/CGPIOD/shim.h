#ifndef RTE_CGPIOD_SHIM_H
#define RTE_CGPIOD_SHIM_H
/*
 * One small line API over libgpiod 1.6 (Debian bookworm, meta-oe's libgpiod 1.x) and libgpiod 2.x
 * (trixie, sid, meta-oe's 2.x). The two APIs share a library name but not one call, so the one the
 * system's <gpiod.h> declares is chosen here at build time: a board's image carries one of them.
 * Swift sees only the rte_gpio_* functions below. Failures return NULL or -1 with errno set.
 */
#include <gpiod.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* v1 defines this macro; v2's header defines none. */
#ifdef GPIOD_LINE_BULK_MAX_LINES
#define RTE_GPIOD_API 1
#else
#define RTE_GPIOD_API 2
#endif

enum { RTE_GPIO_BIAS_AS_IS = 0, RTE_GPIO_BIAS_DISABLE = 1, RTE_GPIO_BIAS_PULL_UP = 2, RTE_GPIO_BIAS_PULL_DOWN = 3 };

typedef struct rte_gpio_chip {
    struct gpiod_chip *chip;
    char name[64];
    char label[64];
    unsigned num_lines;
} rte_gpio_chip;

typedef struct rte_gpio_request {
#if RTE_GPIOD_API == 1
    struct gpiod_line *line;
#else
    struct gpiod_line_request *request;
    int active_low, open_drain, bias;
#endif
    unsigned offset;
} rte_gpio_request;

static inline int rte_gpio_api_major(void) { return RTE_GPIOD_API; }

static inline const char *rte_gpio_library_version(void) {
#if RTE_GPIOD_API == 1
    return gpiod_version_string();
#else
    return gpiod_api_version();
#endif
}

#if RTE_GPIOD_API == 2
static inline int rte__is_number(const char *s) {
    if (!*s) return 0;
    for (; *s; s++) if (*s < '0' || *s > '9') return 0;
    return 1;
}

static inline struct gpiod_chip *rte__open_path(const char *path) {
    if (!gpiod_is_gpiochip_device(path)) { if (errno == 0) errno = ENOENT; return NULL; }
    return gpiod_chip_open(path);
}

/* v1's lookup by number, name, path or label; v2 opens paths only. */
static inline struct gpiod_chip *rte__lookup(const char *desc) {
    char path[300];
    if (desc[0] == '/') return rte__open_path(desc);
    if (rte__is_number(desc)) { snprintf(path, sizeof path, "/dev/gpiochip%s", desc); return rte__open_path(path); }
    if (strncmp(desc, "gpiochip", 8) == 0 && rte__is_number(desc + 8)) {
        snprintf(path, sizeof path, "/dev/%s", desc);
        return rte__open_path(path);
    }
    DIR *dir = opendir("/dev");
    if (!dir) return NULL;
    struct dirent *entry;
    struct gpiod_chip *found = NULL;
    while (!found && (entry = readdir(dir)) != NULL) {
        if (strncmp(entry->d_name, "gpiochip", 8) != 0) continue;
        snprintf(path, sizeof path, "/dev/%s", entry->d_name);
        struct gpiod_chip *chip = rte__open_path(path);
        if (!chip) continue;
        struct gpiod_chip_info *info = gpiod_chip_get_info(chip);
        if (info && strcmp(gpiod_chip_info_get_label(info), desc) == 0) found = chip; else gpiod_chip_close(chip);
        if (info) gpiod_chip_info_free(info);
    }
    closedir(dir);
    if (!found) errno = ENOENT;
    return found;
}
#endif

/* A chip by number ("0"), name ("gpiochip0"), path or label, as gpiodetect shows them. */
static inline rte_gpio_chip *rte_gpio_chip_open(const char *description) {
    errno = 0;
    rte_gpio_chip *c = calloc(1, sizeof *c);
    if (!c) return NULL;
#if RTE_GPIOD_API == 1
    c->chip = gpiod_chip_open_lookup(description);
    if (!c->chip) { int e = errno; free(c); errno = e; return NULL; }
    snprintf(c->name, sizeof c->name, "%s", gpiod_chip_name(c->chip));
    snprintf(c->label, sizeof c->label, "%s", gpiod_chip_label(c->chip));
    c->num_lines = gpiod_chip_num_lines(c->chip);
#else
    c->chip = rte__lookup(description);
    struct gpiod_chip_info *info = c->chip ? gpiod_chip_get_info(c->chip) : NULL;
    if (!info) {
        int e = errno;
        if (c->chip) gpiod_chip_close(c->chip);
        free(c);
        errno = e;
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", gpiod_chip_info_get_name(info));
    snprintf(c->label, sizeof c->label, "%s", gpiod_chip_info_get_label(info));
    c->num_lines = (unsigned)gpiod_chip_info_get_num_lines(info);
    gpiod_chip_info_free(info);
#endif
    return c;
}

static inline void rte_gpio_chip_close(rte_gpio_chip *c) {
    if (!c) return;
    gpiod_chip_close(c->chip);
    free(c);
}

static inline const char *rte_gpio_chip_name(const rte_gpio_chip *c) { return c->name; }
static inline const char *rte_gpio_chip_label(const rte_gpio_chip *c) { return c->label; }
static inline unsigned rte_gpio_chip_num_lines(const rte_gpio_chip *c) { return c->num_lines; }

/* The offset of the line named `name`, or -1 (errno ENOENT). */
static inline int rte_gpio_chip_find_line(rte_gpio_chip *c, const char *name) {
#if RTE_GPIOD_API == 1
    struct gpiod_line *line = gpiod_chip_find_line(c->chip, name);
    if (!line) { if (errno == 0) errno = ENOENT; return -1; }
    return (int)gpiod_line_offset(line);
#else
    errno = 0;
    int offset = gpiod_chip_get_line_offset_from_name(c->chip, name);
    if (offset < 0 && errno == 0) errno = ENOENT;
    return offset;
#endif
}

#if RTE_GPIOD_API == 2
/* One line's settings in a fresh line config (caller frees). */
static inline struct gpiod_line_config *rte__line_config(unsigned offset, int output, int value, int active_low,
                                                         int open_drain, int bias) {
    struct gpiod_line_settings *s = gpiod_line_settings_new();
    struct gpiod_line_config *lc = gpiod_line_config_new();
    if (!s || !lc) { gpiod_line_settings_free(s); gpiod_line_config_free(lc); errno = ENOMEM; return NULL; }
    int ok = gpiod_line_settings_set_direction(s, output ? GPIOD_LINE_DIRECTION_OUTPUT : GPIOD_LINE_DIRECTION_INPUT) == 0;
    if (output) ok = ok && gpiod_line_settings_set_output_value(s, value ? GPIOD_LINE_VALUE_ACTIVE : GPIOD_LINE_VALUE_INACTIVE) == 0;
    gpiod_line_settings_set_active_low(s, active_low != 0);
    /* The kernel refuses a drive mode on an input. */
    if (output && open_drain) ok = ok && gpiod_line_settings_set_drive(s, GPIOD_LINE_DRIVE_OPEN_DRAIN) == 0;
    switch (bias) {
    case RTE_GPIO_BIAS_DISABLE: ok = ok && gpiod_line_settings_set_bias(s, GPIOD_LINE_BIAS_DISABLED) == 0; break;
    case RTE_GPIO_BIAS_PULL_UP: ok = ok && gpiod_line_settings_set_bias(s, GPIOD_LINE_BIAS_PULL_UP) == 0; break;
    case RTE_GPIO_BIAS_PULL_DOWN: ok = ok && gpiod_line_settings_set_bias(s, GPIOD_LINE_BIAS_PULL_DOWN) == 0; break;
    default: break;
    }
    ok = ok && gpiod_line_config_add_line_settings(lc, &offset, 1, s) == 0;
    int e = errno;
    gpiod_line_settings_free(s);
    if (!ok) { gpiod_line_config_free(lc); errno = e ? e : EINVAL; return NULL; }
    return lc;
}
#endif

/* Requests one line as an input or as an output driven to `value` (logical: 1 = active). */
static inline rte_gpio_request *rte_gpio_request_line(rte_gpio_chip *c, unsigned offset, const char *consumer, int output,
                                                      int value, int active_low, int open_drain, int bias) {
    errno = 0;
    if (offset >= c->num_lines) { errno = EINVAL; return NULL; }
    rte_gpio_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->offset = offset;
#if RTE_GPIOD_API == 1
    struct gpiod_line *line = gpiod_chip_get_line(c->chip, offset);
    if (!line) { int e = errno; free(r); errno = e; return NULL; }
    int flags = 0;
    if (active_low) flags |= GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW;
    if (output && open_drain) flags |= GPIOD_LINE_REQUEST_FLAG_OPEN_DRAIN;
    if (bias == RTE_GPIO_BIAS_DISABLE) flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_DISABLE;
    if (bias == RTE_GPIO_BIAS_PULL_UP) flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_UP;
    if (bias == RTE_GPIO_BIAS_PULL_DOWN) flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_DOWN;
    struct gpiod_line_request_config config = {
        .consumer = consumer,
        .request_type = output ? GPIOD_LINE_REQUEST_DIRECTION_OUTPUT : GPIOD_LINE_REQUEST_DIRECTION_INPUT,
        .flags = flags,
    };
    if (gpiod_line_request(line, &config, value ? 1 : 0) != 0) { int e = errno; free(r); errno = e; return NULL; }
    r->line = line;
#else
    r->active_low = active_low; r->open_drain = open_drain; r->bias = bias;
    struct gpiod_line_config *lc = rte__line_config(offset, output, value, active_low, open_drain, bias);
    struct gpiod_request_config *rc = gpiod_request_config_new();
    if (lc && rc) {
        gpiod_request_config_set_consumer(rc, consumer);
        r->request = gpiod_chip_request_lines(c->chip, rc, lc);
    } else if (!rc) errno = ENOMEM;
    int e = errno;
    gpiod_line_config_free(lc);
    gpiod_request_config_free(rc);
    if (!r->request) { free(r); errno = e ? e : EIO; return NULL; }
#endif
    return r;
}

static inline int rte_gpio_set_value(rte_gpio_request *r, int value) {
#if RTE_GPIOD_API == 1
    return gpiod_line_set_value(r->line, value ? 1 : 0);
#else
    return gpiod_line_request_set_value(r->request, r->offset, value ? GPIOD_LINE_VALUE_ACTIVE : GPIOD_LINE_VALUE_INACTIVE);
#endif
}

/* 1 active, 0 inactive, -1 with errno. */
static inline int rte_gpio_get_value(rte_gpio_request *r) {
#if RTE_GPIOD_API == 1
    return gpiod_line_get_value(r->line);
#else
    enum gpiod_line_value v = gpiod_line_request_get_value(r->request, r->offset);
    return v == GPIOD_LINE_VALUE_ERROR ? -1 : (v == GPIOD_LINE_VALUE_ACTIVE ? 1 : 0);
#endif
}

/* Reconfigures the held line in place: an input, or an output driven to `value` at once. */
static inline int rte_gpio_set_direction(rte_gpio_request *r, int output, int value) {
#if RTE_GPIOD_API == 1
    return output ? gpiod_line_set_direction_output(r->line, value ? 1 : 0) : gpiod_line_set_direction_input(r->line);
#else
    struct gpiod_line_config *lc = rte__line_config(r->offset, output, value, r->active_low, r->open_drain, r->bias);
    if (!lc) return -1;
    int result = gpiod_line_request_reconfigure_lines(r->request, lc);
    int e = errno;
    gpiod_line_config_free(lc);
    errno = e;
    return result;
#endif
}

static inline void rte_gpio_release(rte_gpio_request *r) {
    if (!r) return;
#if RTE_GPIOD_API == 1
    gpiod_line_release(r->line);
#else
    gpiod_line_request_release(r->request);
#endif
    free(r);
}
#endif
