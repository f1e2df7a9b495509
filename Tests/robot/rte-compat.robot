*** Settings ***
Documentation     The seed lab's workflow, unchanged, against rte-agent: power the DUT through the
...               RTE's REST API as rtectrl / osfv_cli do (integer state and time, the client
...               sleeping through the press it asked for), catch iPXE on the ser2net-style
...               console with the Telnet library, press Ctrl-B, read iPXE>.
Library           Telnet    timeout=30s
Library           RequestsLibrary
Library           Collections
Library           DateTime
Suite Setup       Create Session    rte    http://${RTE_IP}:${API_PORT}/api/v1
Suite Teardown    Close All Connections

*** Variables ***
${RTE_IP}          127.0.0.1
${API_PORT}        8000
${CONSOLE_PORT}    13541
${GPIO_RELAY}      0
${GPIO_RESET}      8
${GPIO_POWER}      9
${GPIO_CMOS}       11
${GPIO_PWR_LED}    13

*** Keywords ***
RTE GPIO Set
    [Documentation]    osfv_cli's rtectrl.gpio_set: {"state", "direction": "out", "time"} as integers.
    [Arguments]    ${number}    ${state}    ${time}=0
    ${state}=    Convert To Integer    ${state}
    ${time}=    Convert To Integer    ${time}
    ${body}=    Create Dictionary    state=${state}    direction=out    time=${time}
    ${response}=    PATCH On Session    rte    /gpio/${number}    json=${body}
    Should Be Equal As Integers    ${response.status_code}    200

RTE GPIO Get
    [Arguments]    ${number}
    ${response}=    GET On Session    rte    /gpio/${number}
    ${state}=    Evaluate    ${response.json()}[state] % 2
    RETURN    ${state}

Power Button Press
    [Documentation]    osfv_cli's power_on / power_off / reset: a timed press, then the client sleeps as long.
    [Arguments]    ${number}    ${seconds}
    RTE GPIO Set    ${number}    1    ${seconds}
    Sleep    ${seconds}s

Power LED Should Be
    [Documentation]    osfv_cli's on_ex / off_ex: poll gpio 13 up to 20 × 0.25 s.
    [Arguments]    ${expected}
    Wait Until Keyword Succeeds    20x    0.25s    GPIO Should Read    ${GPIO_PWR_LED}    ${expected}

GPIO Should Read
    [Arguments]    ${number}    ${expected}
    ${state}=    RTE GPIO Get    ${number}
    Should Be Equal As Integers    ${state}    ${expected}

Run iPXE Shell
    Read Until    Press Ctrl-B
    Write Bare    \x02
    Read Until    iPXE>

*** Test Cases ***
Power Cycle Through The Relay And Enter The iPXE Shell
    Open Connection    ${RTE_IP}    port=${CONSOLE_PORT}
    RTE GPIO Set    ${GPIO_RELAY}    0
    RTE GPIO Set    ${GPIO_RELAY}    1
    ${relay}=    RTE GPIO Get    ${GPIO_RELAY}
    Should Be Equal As Integers    ${relay}    1
    Run iPXE Shell
    Write    echo robot-was-here
    Read Until    robot-was-here

Reset Button Press Restarts The Firmware
    RTE GPIO Set    ${GPIO_RESET}    1    1
    ${reset}=    RTE GPIO Get    ${GPIO_RESET}
    Should Be Equal As Integers    ${reset}    1    the press is still going when the PATCH answers
    Sleep    1s
    Read Until    PC Engines apu2
    Run iPXE Shell
    GPIO Should Read    ${GPIO_RESET}    0

Power LED Reads On While The Board Runs
    Power LED Should Be    1

Power Off Is A Six Second Press That Takes Six Seconds
    ${start}=    Get Current Date
    Power Button Press    ${GPIO_POWER}    6
    ${end}=    Get Current Date
    ${elapsed}=    Subtract Date From Date    ${end}    ${start}
    Should Be True    6 <= ${elapsed} < 7.5    osfv's power_off took ${elapsed} s
    Power LED Should Be    0
    GPIO Should Read    ${GPIO_POWER}    0

Power On Is A One Second Press
    Power Button Press    ${GPIO_POWER}    1
    Power LED Should Be    1
    Read Until    PC Engines apu2

Clear CMOS Holds The Line Ten Seconds Then Releases It
    RTE GPIO Set    ${GPIO_CMOS}    1    10
    GPIO Should Read    ${GPIO_CMOS}    1
    Sleep    10s
    Wait Until Keyword Succeeds    4x    0.25s    GPIO Should Read    ${GPIO_CMOS}    0

Relay Toggle Cuts And Restores The Supply
    ${state}=    RTE GPIO Get    ${GPIO_RELAY}
    Should Be Equal As Integers    ${state}    1
    RTE GPIO Set    ${GPIO_RELAY}    0
    GPIO Should Read    ${GPIO_RELAY}    0
    Power LED Should Be    0
    RTE GPIO Set    ${GPIO_RELAY}    1
    GPIO Should Read    ${GPIO_RELAY}    1
    Power LED Should Be    1
    Read Until    PC Engines apu2
    RTE GPIO Set    ${GPIO_RELAY}    0
