*** Settings ***
Documentation     The seed lab's workflow, unchanged, against rte-agent: power the DUT through the
...               RTE's REST API (as rtectrl / osfv_cli do), catch iPXE on the ser2net-style
...               console with the Telnet library, press Ctrl-B, read iPXE>.
Library           Telnet    timeout=30s
Library           RequestsLibrary
Library           Collections
Suite Setup       Create Session    rte    http://${RTE_IP}:${API_PORT}/api/v1
Suite Teardown    Close All Connections

*** Variables ***
${RTE_IP}          127.0.0.1
${API_PORT}        8000
${CONSOLE_PORT}    13541

*** Keywords ***
RTE GPIO Set
    [Arguments]    ${number}    ${state}    ${time}=0
    ${state}=    Convert To Integer    ${state}
    ${time}=    Convert To Number    ${time}
    ${body}=    Create Dictionary    state=${state}    direction=out    time=${time}
    ${response}=    PATCH On Session    rte    /gpio/${number}    json=${body}
    Should Be Equal As Integers    ${response.status_code}    200

RTE GPIO Get
    [Arguments]    ${number}
    ${response}=    GET On Session    rte    /gpio/${number}
    ${state}=    Evaluate    ${response.json()}[state] % 2
    RETURN    ${state}

Run iPXE Shell
    Read Until    Press Ctrl-B
    Write Bare    \x02
    Read Until    iPXE>

*** Test Cases ***
Power Cycle Through The Relay And Enter The iPXE Shell
    Open Connection    ${RTE_IP}    port=${CONSOLE_PORT}
    RTE GPIO Set    0    0
    RTE GPIO Set    0    1
    ${relay}=    RTE GPIO Get    0
    Should Be Equal As Integers    ${relay}    1
    Run iPXE Shell
    Write    echo robot-was-here
    Read Until    robot-was-here

Reset Button Press Restarts The Firmware
    RTE GPIO Set    8    1    1
    ${reset}=    RTE GPIO Get    8
    Should Be Equal As Integers    ${reset}    0
    Read Until    PC Engines apu2
    Run iPXE Shell
    RTE GPIO Set    0    0
